package server

import (
	"context"
	"encoding/json"

	"github.com/extauthz/extauthz/internal/authn/jwt"
	"github.com/extauthz/extauthz/internal/engine"
)

// BuildTokens builds the JWT verifier from extauthz.jwt.
func BuildTokens(ctx context.Context, raw json.RawMessage, baseDir string) (engine.Tokens, error) {
	return buildTokens(nil)(ctx, raw, baseDir)
}

// buildTokens reports JWKS fetch outcomes to onFetch (metrics).
func buildTokens(onFetch func(issuer string, ok bool)) func(context.Context, json.RawMessage, string) (engine.Tokens, error) {
	return func(ctx context.Context, raw json.RawMessage, baseDir string) (engine.Tokens, error) {
		t, err := jwt.NewTokens(ctx, raw, baseDir, nil, onFetch)
		if err != nil {
			return nil, err
		}
		return t, nil
	}
}
