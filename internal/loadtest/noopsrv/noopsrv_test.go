package noopsrv

import (
	"context"
	"testing"
)

// The floor does no work: every Check is an allow with nothing else.
func TestAuthorizerAllowsWithNothingElse(t *testing.T) {
	resp, err := Authorizer{}.Check(context.Background(), nil)
	if err != nil || resp.GetStatus().GetCode() != 0 || resp.GetHttpResponse() != nil || resp.GetDynamicMetadata() != nil {
		t.Fatalf("%v %v", resp, err)
	}
	if len(ServerOptions()) == 0 {
		t.Fatal("no server options")
	}
}
