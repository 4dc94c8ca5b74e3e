package server

import (
	"context"
	"encoding/json"

	"github.com/extauthz/extauthz/internal/authn/jwt"
	"github.com/extauthz/extauthz/internal/engine"
)

// BuildTokens builds the JWT verifier from extauthz.jwt.
func BuildTokens(ctx context.Context, raw json.RawMessage, baseDir string) (engine.Tokens, error) {
	t, err := jwt.NewTokens(ctx, raw, baseDir, nil)
	if err != nil {
		return nil, err
	}
	return t, nil
}
