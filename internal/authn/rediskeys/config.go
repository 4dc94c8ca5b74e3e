package rediskeys

import (
	"fmt"
	"strings"
	"time"
)

// Store types of settings.api_keys_store.type.
const (
	TypeEmbedded = "embedded" // extauthz.api_keys in data.json (the default)
	TypeRedis    = "redis"
)

// Defaults.
const (
	DefaultPrefix            = "extauthz:key"
	DefaultTimeout           = 50 * time.Millisecond
	DefaultCacheSize         = 100_000
	DefaultNegativeCacheSize = 10_000
	DefaultPositiveTTL       = 30 * time.Second
	DefaultNegativeTTL       = 5 * time.Second

	maxTimeoutMS = 10_000
	maxCache     = 100_000_000
	maxTTLMS     = 24 * 3600 * 1000
)

// Config is extauthz.settings.api_keys_store in policy data:
//
//	{"type": "redis", "addr": "redis:6379", "prefix": "extauthz:key", "timeout_ms": 50,
//	 "cache_size": 100000, "negative_cache_size": 10000,
//	 "positive_ttl_ms": 30000, "negative_ttl_ms": 5000}
//
// Only type is required; addr defaults to limits.backend.addr when the
// quotas use Redis.
type Config struct {
	Type              string `json:"type"`
	Addr              string `json:"addr,omitempty"`
	Prefix            string `json:"prefix,omitempty"`
	TimeoutMS         int64  `json:"timeout_ms,omitempty"`
	CacheSize         int    `json:"cache_size,omitempty"`
	NegativeCacheSize int    `json:"negative_cache_size,omitempty"`
	PositiveTTLMS     int64  `json:"positive_ttl_ms,omitempty"`
	NegativeTTLMS     int64  `json:"negative_ttl_ms,omitempty"`
}

// Redis reports whether c selects the Redis store.
func (c *Config) Redis() bool { return c != nil && c.Type == TypeRedis }

// Check reports every problem of c, each naming its field (relative to
// api_keys_store), and fills the defaults.
func (c *Config) Check() []string {
	var p []string
	bad := func(field, format string, a ...any) { p = append(p, field+": "+fmt.Sprintf(format, a...)) }
	switch c.Type {
	case TypeEmbedded, "":
		return nil
	case TypeRedis:
	default:
		bad("type", "%q is not one of embedded, redis", c.Type)
		return p
	}
	if c.Addr == "" {
		bad("addr", "required (or set limits.backend.type redis with an addr: the same Redis is used)")
	}
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	} else if strings.ContainsAny(c.Prefix, " \t\r\n") {
		bad("prefix", "must not contain white space")
	}
	inRange := func(field string, v *int64, lo, hi, def int64) {
		switch {
		case *v == 0:
			*v = def
		case *v < lo || *v > hi:
			bad(field, "must be between %d and %d, got %d", lo, hi, *v)
		}
	}
	inRange("timeout_ms", &c.TimeoutMS, 1, maxTimeoutMS, DefaultTimeout.Milliseconds())
	inRange("positive_ttl_ms", &c.PositiveTTLMS, 1, maxTTLMS, DefaultPositiveTTL.Milliseconds())
	inRange("negative_ttl_ms", &c.NegativeTTLMS, 1, maxTTLMS, DefaultNegativeTTL.Milliseconds())
	cs, ncs := int64(c.CacheSize), int64(c.NegativeCacheSize)
	inRange("cache_size", &cs, 1, maxCache, DefaultCacheSize)
	inRange("negative_cache_size", &ncs, 1, maxCache, DefaultNegativeCacheSize)
	c.CacheSize, c.NegativeCacheSize = int(cs), int(ncs)
	return p
}

// Channel is the pub/sub channel invalidations are published on.
func (c *Config) Channel() string { return c.Prefix + ":invalidate" }
