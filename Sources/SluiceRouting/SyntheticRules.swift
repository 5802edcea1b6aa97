import Foundation

/// Generated rules for benchmarks (`sluice bench-routes`, benchmarks/hotpath): one layout, so
/// that route-lookup and reload figures measure the same table.
public enum SyntheticRules {
    /// Ingress i serves host (i % hosts) with three paths of its own; the first 50 hosts are wildcards.
    public static func generate(ingresses: Int, hosts: Int, endpoint: String? = nil) -> String {
        let ip = endpoint.map { String($0.split(separator: ":")[0]) }
        let port = endpoint.flatMap { Int($0.split(separator: ":").last ?? "") } ?? 8080
        var y = ""
        let services = 100
        for s in 0..<services {
            y += """
            apiVersion: v1
            kind: Service
            metadata: {name: svc\(s), namespace: bench}
            spec: {ports: [{name: http, port: 80, targetPort: 8080}]}
            ---
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata: {name: svc\(s)-a, namespace: bench, labels: {kubernetes.io/service-name: svc\(s)}}
            addressType: IPv4
            ports: [{name: http, port: \(port)}]
            endpoints: [{addresses: [\(ip ?? "10.0.\(s / 250).\(s % 250 + 1)")]}]
            ---

            """
        }
        for i in 0..<ingresses {
            let h = i % hosts
            let host = h < 50 ? "*.wild\(h).example.com" : "host\(h).example.com"
            let svc = i % services
            y += """
            apiVersion: networking.k8s.io/v1
            kind: Ingress
            metadata: {name: ing\(i), namespace: bench, creationTimestamp: "2026-01-01T00:00:\(String(format: "%02d", i % 60))Z"}
            spec:
              ingressClassName: sluice
              rules:
                - host: "\(host)"
                  http:
                    paths:
                      - {path: /svc\(i)/deep, pathType: Prefix, backend: {service: {name: svc\(svc), port: {number: 80}}}}
                      - {path: /api/v\(i), pathType: Prefix, backend: {service: {name: svc\((svc + 1) % services), port: {number: 80}}}}
                      - {path: /static/app\(i).js, pathType: Exact, backend: {service: {name: svc\((svc + 2) % services), port: {name: http}}}}
            ---

            """
        }
        return y
    }
}
