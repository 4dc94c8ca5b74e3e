package checkreq

import (
	"math"
	"strings"
)

// EscapedSlashesAction is HttpConnectionManager.path_with_escaped_slashes_action.
type EscapedSlashesAction int

const (
	// KeepUnchanged leaves %2F/%5C alone (Envoy's IMPLEMENTATION_SPECIFIC_DEFAULT).
	KeepUnchanged EscapedSlashesAction = iota
	// RejectRequest answers 400 when the path contains %2F, %2f, %5C or %5c.
	RejectRequest
	// UnescapeAndRedirect answers 307 with the unescaped path in location.
	UnescapeAndRedirect
	// UnescapeAndForward unescapes and carries on.
	UnescapeAndForward
)

// UnderscoresAction is HttpProtocolOptions.headers_with_underscores_action.
type UnderscoresAction int

const (
	// AllowUnderscores is Envoy's default.
	AllowUnderscores UnderscoresAction = iota
	// RejectUnderscores answers 400 (HTTP/1 codec protocol error).
	RejectUnderscores
	// DropUnderscores silently drops the header.
	DropUnderscores
)

type normalizeAction int

const (
	normContinue normalizeAction = iota
	normReject
	normRedirect
)

// maybeNormalizePath ports ConnectionManagerUtility::maybeNormalizePath: fragment
// rejection, escaped-slash handling, RFC 3986 normalisation (normalize_path) and
// merge_slashes, in that order. It returns the new :path and the action.
func maybeNormalizePath(path string, cfg *HCM) (string, normalizeAction) {
	// envoy.reloadable_features.http_reject_path_with_fragment (default on).
	if strings.IndexByte(path, '#') >= 0 {
		return path, normReject
	}
	action := normContinue
	if cfg.PathWithEscapedSlashesAction != KeepUnchanged {
		if np, found := unescapeSlashes(path); found {
			switch cfg.PathWithEscapedSlashesAction {
			case RejectRequest:
				return path, normReject
			case UnescapeAndRedirect:
				action = normRedirect
			}
			path = np
		}
	}
	if cfg.NormalizePath {
		np, ok := rfcNormalize(path)
		if !ok {
			return path, normReject
		}
		path = np
	}
	// Merge slashes after normalisation, as Envoy does.
	if cfg.MergeSlashes {
		path = mergeSlashes(path)
	}
	return path, action
}

// splitQuery splits a :path at the first '?'; query keeps its '?'.
func splitQuery(p string) (path, query string) {
	if i := strings.IndexByte(p, '?'); i >= 0 {
		return p[:i], p[i:]
	}
	return p, ""
}

// unescapeSlashes ports PathUtil::unescapeSlashes.
func unescapeSlashes(p string) (string, bool) {
	path, query := splitQuery(p)
	if strings.IndexByte(path, '%') < 0 {
		return p, false
	}
	r := strings.NewReplacer("%2F", "/", "%2f", "/", "%5C", `\`, "%5c", `\`)
	np := r.Replace(path) + query
	return np, len(np) != len(p)
}

// mergeSlashes ports PathUtil::mergeSlashes.
func mergeSlashes(p string) string {
	path, query := splitQuery(p)
	if !strings.Contains(path, "//") {
		return p
	}
	var b strings.Builder
	if strings.HasPrefix(path, "/") {
		b.WriteByte('/')
	}
	first := true
	for seg := range strings.SplitSeq(path, "/") {
		if seg == "" {
			continue
		}
		if !first {
			b.WriteByte('/')
		}
		b.WriteString(seg)
		first = false
	}
	// Like Envoy, "//" becomes "//" (prefix "/" + no segments + suffix "/").
	if strings.HasSuffix(path, "/") {
		b.WriteByte('/')
	}
	b.WriteString(query)
	return b.String()
}

// rfcNormalize ports PathTransformer::rfcNormalize: the path component (not the
// query) goes through the Chromium canonicaliser Envoy vendors.
func rfcNormalize(p string) (string, bool) {
	path, query := splitQuery(p)
	np, ok := canonicalizePath(path)
	if !ok {
		return "", false
	}
	return np + query, true
}

// Character classes of chromium_url/url_canon_path.cc kPathCharLookup.
const (
	cPass     = 0
	cSpecial  = 1
	cEscBit   = 2
	cEscape   = cEscBit | cSpecial
	cUnescape = 4
	cInvBit   = 8
	cInvalid  = cInvBit | cSpecial
)

var pathCharLookup = func() [256]byte {
	var t [256]byte
	for c := 0; c < 256; c++ {
		switch {
		case c == 0:
			t[c] = cInvalid
		case c < 0x20, c >= 0x7f:
			t[c] = cEscape
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
			t[c] = cUnescape
		}
	}
	for _, c := range []byte(` "#%<>?\^` + "`{|}") {
		t[c] = cEscape
	}
	for _, c := range []byte("-_~") {
		t[c] = cUnescape
	}
	t['.'] = cSpecial
	// '!', '$', '&', '\'', '(', ')', '*', '+', ',', '/', ':', ';', '=', '@', '[', ']' pass.
	return t
}()

func isURLSlash(c byte) bool { return c == '/' || c == '\\' }

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

func hexVal(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

// isDot returns the length of a '.' or "%2e" at s[i], else 0.
func isDot(s string, i int) int {
	if s[i] == '.' {
		return 1
	}
	if s[i] == '%' && i+3 <= len(s) && s[i+1] == '2' && (s[i+2] == 'e' || s[i+2] == 'E') {
		return 3
	}
	return 0
}

// decodeEscaped decodes "%XY" at s[i].
func decodeEscaped(s string, i int) (byte, bool) {
	if i+3 > len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
		return 0, false
	}
	return hexVal(s[i+1])<<4 | hexVal(s[i+2]), true
}

type dotDisposition int

const (
	notADirectory dotDisposition = iota
	directoryCur
	directoryUp
)

func classifyAfterDot(s string, afterDot int) (dotDisposition, int) {
	if afterDot == len(s) {
		return directoryCur, 0
	}
	if isURLSlash(s[afterDot]) {
		return directoryCur, 1
	}
	if l := isDot(s, afterDot); l > 0 {
		after := afterDot + l
		if after == len(s) {
			return directoryUp, l
		}
		if isURLSlash(s[after]) {
			return directoryUp, l + 1
		}
	}
	return notADirectory, 0
}

func backUpToPreviousSlash(begin int, out []byte) []byte {
	i := len(out) - 1
	if i == begin {
		return out
	}
	i--
	for out[i] != '/' && i > begin {
		i--
	}
	return out[:i+1]
}

func appendEscaped(out []byte, c byte) []byte {
	const hexUpper = "0123456789ABCDEF"
	return append(out, '%', hexUpper[c>>4], hexUpper[c&0xf])
}

func checkForNestedEscapes(s string, next, lastInvalidPercent int, out []byte) []byte {
	length := len(out)
	lastUnescaped := out[length-1]
	appendNext := lastInvalidPercent == length-2
	if appendNext {
		if next == len(s) || s[next] >= 0x80 {
			return out
		}
		out = append(out, s[next])
	}
	if _, ok := decodeEscaped(string(out), lastInvalidPercent); ok {
		if !appendNext {
			out = append(out, out[lastInvalidPercent+1])
		}
		out[lastInvalidPercent+1] = '2'
		out[lastInvalidPercent+2] = '5'
		out = append(out, lastUnescaped)
	} else if appendNext {
		out = out[:length]
	}
	return out
}

// canonicalizePath ports chromium_url::CanonicalizePath (DoPath/DoPartialPath)
// as vendored by Envoy: removes "." and ".." segments (also written %2e),
// turns '\' into '/', decodes %-escapes of unreserved characters, escapes
// characters that must be escaped (upper-case hex) and keeps other escapes
// byte for byte. It fails (Envoy: 400) only on NUL, raw or %00.
func canonicalizePath(in string) (string, bool) {
	out := make([]byte, 0, len(in)+4)
	if in == "" {
		return "/", true
	}
	if !isURLSlash(in[0]) {
		out = append(out, '/')
	}
	const begin = 0
	lastInvalidPercent := math.MinInt
	ok := true
	for i := 0; i < len(in); i++ {
		c := in[i]
		flags := pathCharLookup[c]
		if flags&cSpecial == 0 {
			out = append(out, c)
			continue
		}
		if dl := isDot(in, i); dl > 0 {
			if len(out) > begin && out[len(out)-1] == '/' {
				disp, consumed := classifyAfterDot(in, i+dl)
				switch disp {
				case notADirectory:
					out = append(out, '.')
					i += dl - 1
				case directoryCur:
					i += dl + consumed - 1
				case directoryUp:
					out = backUpToPreviousSlash(begin, out)
					i += dl + consumed - 1
				}
			} else {
				out = append(out, '.')
				i += dl - 1
			}
			continue
		}
		switch {
		case c == '\\':
			out = append(out, '/')
		case c == '%':
			if v, good := decodeEscaped(in, i); good {
				i += 2
				uf := pathCharLookup[v]
				if uf&cUnescape != 0 {
					out = append(out, v)
					if lastInvalidPercent >= len(out)-3 {
						out = checkForNestedEscapes(in, i+1, lastInvalidPercent, out)
					}
				} else {
					out = append(out, '%', in[i-1], in[i])
					if uf&cInvBit != 0 {
						ok = false
					}
				}
			} else {
				lastInvalidPercent = len(out)
				out = append(out, '%')
			}
		case flags&cInvBit != 0:
			out = appendEscaped(out, c)
			ok = false
		case flags&cEscBit != 0:
			out = appendEscaped(out, c)
		}
	}
	return string(out), ok
}
