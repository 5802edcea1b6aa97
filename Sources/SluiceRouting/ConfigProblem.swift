/// One thing wrong (or worth a warning) in the rules folder, located as precisely as the file allows.
public struct ConfigProblem: Sendable, Equatable, CustomStringConvertible {
    public enum Severity: String, Sendable {
        case error, warning
    }

    public var severity: Severity
    public var file: String
    public var line: Int
    /// `Ingress default/shop`, or empty when the problem is not about one object.
    public var object: String
    /// The field path, e.g. `spec.rules[0].http.paths[1].path`.
    public var field: String
    public var message: String

    public init(_ severity: Severity, file: String, line: Int, object: String, field: String, message: String) {
        self.severity = severity
        self.file = file
        self.line = line
        self.object = object
        self.field = field
        self.message = message
    }

    /// `file:line: kind ns/name: field: message`
    public var description: String {
        var s = "\(file):\(line): "
        if severity == .warning { s += "warning: " }
        if !object.isEmpty { s += object + ": " }
        if !field.isEmpty { s += field + ": " }
        return s + message
    }
}
