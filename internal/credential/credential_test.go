package credential

import (
	"strings"
	"testing"
)

func TestExtract(t *testing.T) {
	jwt := "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"
	cases := []struct {
		name    string
		headers map[string]string
		want    Presented
	}{
		{"nothing", map[string]string{}, Presented{Kind: None}},
		{"api key header", map[string]string{"x-api-key": "abc_123"}, Presented{Kind: APIKey, Via: ViaHeader, Value: "abc_123"}},
		{"empty api key", map[string]string{"x-api-key": ""}, Presented{Kind: APIKey, Via: ViaHeader, Problem: ProblemEmpty}},
		{"comma joined api keys", map[string]string{"x-api-key": "k1,k2"}, Presented{Kind: APIKey, Via: ViaHeader, Problem: ProblemDuplicate}},
		{"api key with space", map[string]string{"x-api-key": "k1 k2"}, Presented{Kind: APIKey, Via: ViaHeader, Problem: ProblemBadChars}},
		{"api key non-utf8 replaced by envoy", map[string]string{"x-api-key": "k!!"}, Presented{Kind: APIKey, Via: ViaHeader, Problem: ProblemBadChars}},
		{"api key raw high bytes", map[string]string{"x-api-key": "k\xff"}, Presented{Kind: APIKey, Via: ViaHeader, Problem: ProblemBadChars}},
		{"api key too long", map[string]string{"x-api-key": strings.Repeat("a", MaxAPIKeyLen+1)}, Presented{Kind: APIKey, Via: ViaHeader, Problem: ProblemTooLong}},
		{"both credentials", map[string]string{"x-api-key": "k", "authorization": "Bearer " + jwt}, Presented{Kind: APIKey, Via: ViaHeader, Problem: ProblemBoth}},
		{"bearer jwt", map[string]string{"authorization": "Bearer " + jwt}, Presented{Kind: JWT, Via: ViaBearer, Value: jwt}},
		{"bearer lower-case scheme", map[string]string{"authorization": "bearer " + jwt}, Presented{Kind: JWT, Via: ViaBearer, Value: jwt}},
		{"BEARER upper-case scheme", map[string]string{"authorization": "BEARER " + jwt}, Presented{Kind: JWT, Via: ViaBearer, Value: jwt}},
		{"bearer opaque is api key", map[string]string{"authorization": "Bearer sk_live_123"}, Presented{Kind: APIKey, Via: ViaBearer, Value: "sk_live_123"}},
		{"bearer double space", map[string]string{"authorization": "Bearer  " + jwt}, Presented{Kind: JWT, Via: ViaBearer, Problem: ProblemSyntax}},
		{"bearer tab", map[string]string{"authorization": "Bearer\t" + jwt}, Presented{Kind: JWT, Via: ViaBearer, Problem: ProblemScheme}},
		{"bearer empty", map[string]string{"authorization": "Bearer "}, Presented{Kind: JWT, Via: ViaBearer, Problem: ProblemEmpty}},
		{"bearer alone", map[string]string{"authorization": "Bearer"}, Presented{Kind: JWT, Via: ViaBearer, Problem: ProblemEmpty}},
		{"basic scheme", map[string]string{"authorization": "Basic dXNlcjpwYXNz"}, Presented{Kind: JWT, Via: ViaBearer, Problem: ProblemScheme}},
		{"no scheme", map[string]string{"authorization": "sk_live_123"}, Presented{Kind: JWT, Via: ViaBearer, Problem: ProblemScheme}},
		{"two authorization headers", map[string]string{"authorization": "Bearer a.b.c,Bearer d.e.f"}, Presented{Kind: JWT, Via: ViaBearer, Problem: ProblemDuplicate}},
		{"token too long", map[string]string{"authorization": "Bearer " + strings.Repeat("a", MaxTokenLen+1)}, Presented{Kind: JWT, Via: ViaBearer, Problem: ProblemTooLong}},
		{"token bad char", map[string]string{"authorization": "Bearer a.b.c\"x"}, Presented{Kind: JWT, Via: ViaBearer, Problem: ProblemSyntax}},
		{"token padding then more", map[string]string{"authorization": "Bearer ab=c"}, Presented{Kind: JWT, Via: ViaBearer, Problem: ProblemSyntax}},
	}
	for _, c := range cases {
		got := Extract(c.headers, "x-api-key")
		if got != c.want {
			t.Errorf("%s: got %+v, want %+v", c.name, got, c.want)
		}
	}
}

func FuzzExtract(f *testing.F) {
	f.Add("k", "Bearer a.b.c")
	f.Add("", "bearer x,y")
	f.Add("a,b", "")
	f.Fuzz(func(t *testing.T, key, auth string) {
		h := map[string]string{}
		if key != "" {
			h["x-api-key"] = key
		}
		if auth != "" {
			h["authorization"] = auth
		}
		p := Extract(h, "x-api-key")
		if p.Problem != "" && p.Value != "" {
			t.Fatalf("a refused credential carries a value: %+v", p)
		}
		if p.Value != "" && (strings.ContainsAny(p.Value, ", \t\r\n") || len(p.Value) > MaxTokenLen) {
			t.Fatalf("accepted an ambiguous value %q", p.Value)
		}
	})
}

// tokenCharsByBranches is the b64token test written out (RFC 6750:
// 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="), the
// reference for the table tokenChars uses.
func tokenCharsByBranches(s string) bool {
	pad := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '=':
			pad = true
		case pad:
			return false
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '-', c == '.', c == '_', c == '~', c == '+', c == '/':
		default:
			return false
		}
	}
	return true
}

func TestTokenCharsTable(t *testing.T) {
	for c := range 256 {
		for _, s := range []string{string(rune(c)), "ab" + string([]byte{byte(c)}) + "cd", "ab=" + string([]byte{byte(c)}), string([]byte{byte(c)}) + "=="} {
			if got, want := tokenChars(s), tokenCharsByBranches(s); got != want {
				t.Errorf("tokenChars(%q) = %v, want %v", s, got, want)
			}
		}
	}
}

func FuzzTokenChars(f *testing.F) {
	for _, s := range []string{"", "abc", "abc==", "a=b", "xa_demo_7Qm2vK9pL4sT8wZ1", "eyJhbGciOiJSUzI1NiJ9.e30.sig", "a b", "==", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := tokenChars(s), tokenCharsByBranches(s); got != want {
			t.Errorf("tokenChars(%q) = %v, want %v", s, got, want)
		}
	})
}
