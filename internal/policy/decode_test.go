package policy

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
)

var dataSeeds = []string{
	`{}`, `null`, `[]`, `{"extauthz": null}`, `{"extauthz": 3}`, `{"a": 1, "a": 2}`,
	`{"extauthz": {"api_keys": {"x": {"id": "a"}}, "routes": [{"id": "r", "n": 1.50}], "settings": {}}, "other": {"v": [1e3, "s", null, true]}}`,
	`{"extauthz": {"api_keys": {"x": 1}}, "extauthz": {"routes": []}}`,
	`{"extauthz": {"routes": [}, "extauthz": {"routes": []}}`,
	`{"ext\u0061uthz": {"api_k\u0065ys": {}}, "caf\u00e9": "\xff"}`,
	`{"extauthz": {"api_keys": {"x": {"id": "a"}}}} trailing`,
	`{"extauthz": {"api_keys": {"x": {"id": "a",}}}}`,
	`{"extauthz": {"api_keys" {"x": {}}}}`,
	" \n{\"extauthz\":\t{\"api_keys\": \n {\"x\": [1, 2]} ,\"limits\":{}}}\n",
}

func sameDecode(t *testing.T, b []byte) {
	t.Helper()
	got, gerr := decodeData(b, nil)
	want, werr := decodeDataSlow(b, nil)
	if fmt.Sprint(gerr) != fmt.Sprint(werr) || !reflect.DeepEqual(got, want) {
		t.Fatalf("decodeData(%q):\nfast: %#v %v\nslow: %#v %v", b, got, gerr, want, werr)
	}
}

func TestDecodeDataFastMatchesSlow(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	alphabet := []byte(`{}[]":,\ nult0123456789-.eaxz` + "\t\xc3\xa9")
	for _, s := range dataSeeds {
		b := []byte(s)
		sameDecode(t, b)
		for i := range b {
			sameDecode(t, slices.Delete(slices.Clone(b), i, i+1))
			m := slices.Clone(b)
			m[i] = alphabet[r.IntN(len(alphabet))]
			sameDecode(t, m)
		}
	}
}

func FuzzDecodeData(f *testing.F) {
	for _, s := range dataSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) { sameDecode(t, b) })
}
