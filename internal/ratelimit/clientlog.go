package ratelimit

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/redis/go-redis/v9"
)

// ClientLogMsg is the message of the records go-redis's own log lines
// become (see SetClientLogger).
const ClientLogMsg = "ratelimit: redis client"

// SetClientLogger routes go-redis's internal log lines (dial failures, pool
// trouble), which it otherwise prints as plain text on stderr, to log as
// structured Warn records with the line in "detail". The go-redis logger is
// process-wide: call it once, at startup. Give it a throttled logger
// (internal/logthrottle): go-redis logs every failed dial.
func SetClientLogger(log *slog.Logger) {
	redis.SetLogger(clientLogger{log: log})
}

type clientLogger struct{ log *slog.Logger }

func (c clientLogger) Printf(ctx context.Context, format string, v ...any) {
	if ctx == nil {
		ctx = context.Background()
	}
	line := strings.TrimPrefix(fmt.Sprintf(format, v...), "redis: ")
	c.log.LogAttrs(ctx, slog.LevelWarn, ClientLogMsg, slog.String("detail", line))
}
