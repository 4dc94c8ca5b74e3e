package cli

import (
	"context"
	"errors"
)

func runDemo(ctx context.Context, args []string, env Env) error {
	return errors.New("demo: not wired yet")
}
