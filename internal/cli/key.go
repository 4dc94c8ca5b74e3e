package cli

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/extauthz/extauthz/internal/authn/apikey"
	"github.com/extauthz/extauthz/internal/authn/rediskeys"
	"github.com/extauthz/extauthz/internal/config"
)

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

const keyUsage = `Usage:
  extauthz key create --id ID [--subject S] [--tenant T]... [--scope S]... [--expires RFC3339] [--plan P] [--cidr C]... [--prefix xa_]
      Prints the new key (shown once; store it in your secret manager) and the
      record to paste into extauthz.api_keys in data.json (keyed by SHA-256; the key itself is never stored).
      With --redis ADDR the record is written to that Redis key store instead
      (settings.api_keys_store type redis) and the sidecars are told at once.
  extauthz key hash [KEY]
      Prints the SHA-256 record key of an existing key (read from stdin when not given).
  extauthz key import --redis ADDR [--prefix-redis P] [--batch N] [--file FILE]
      Stores every record of an extauthz.api_keys JSON object (digest -> record; FILE, default stdin)
      in Redis, N per pipelined round trip, validating each as the server will,
      then tells the sidecars to drop their caches.
  extauthz key revoke|suspend|activate|delete --redis ADDR [--prefix-redis P] (--digest SHA256 | KEY on stdin)
      Changes a key's status (or deletes its record) in Redis and tells the sidecars at once.
`

func runKey(args []string, env Env) error {
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help" || args[0] == "help") {
		fmt.Fprint(env.Stdout, keyUsage)
		return nil
	}
	if len(args) == 0 {
		fmt.Fprint(env.Stderr, keyUsage)
		return errUsage
	}
	switch args[0] {
	case "hash":
		key := ""
		if len(args) > 1 && strings.HasPrefix(args[1], "-") {
			if args[1] == "-h" || args[1] == "--help" || args[1] == "-help" {
				fmt.Fprint(env.Stdout, keyUsage)
				return nil
			}
			fmt.Fprintf(env.Stderr, "extauthz key hash: %q looks like a flag, not a key (give a key starting with - on stdin)\n", args[1])
			return errUsage
		}
		if len(args) > 2 {
			fmt.Fprintln(env.Stderr, "extauthz key hash: one key at a time")
			return errUsage
		}
		if len(args) > 1 {
			key = args[1]
		} else {
			line, err := bufio.NewReader(env.Stdin).ReadString('\n')
			if err != nil && err != io.EOF {
				return err
			}
			key = strings.TrimRight(line, "\r\n")
		}
		if key == "" {
			return fmt.Errorf("no key given")
		}
		fmt.Fprintln(env.Stdout, apikey.Hash(key))
		return nil
	case "create":
		return keyCreate(args[1:], env)
	case "import":
		return keyImport(args[1:], env)
	case "revoke", "suspend", "activate", "delete":
		return keyChange(args[0], args[1:], env)
	}
	fmt.Fprintf(env.Stderr, "extauthz key: unknown subcommand %q\n", args[0])
	fmt.Fprint(env.Stderr, keyUsage)
	return errUsage
}

func keyCreate(args []string, env Env) error {
	fs := flag.NewFlagSet("key create", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	var tenants, scopes, cidrs multi
	id := fs.String("id", "", "key id (shown in logs and upstream headers; required)")
	subject := fs.String("subject", "", "subject (default: the id)")
	expires := fs.String("expires", "", "expiry, RFC 3339")
	plan := fs.String("plan", "", "rate-limit plan")
	prefix := fs.String("prefix", "xa_", "key prefix")
	fs.Var(&tenants, "tenant", "tenant id (repeatable)")
	fs.Var(&scopes, "scope", "scope (repeatable)")
	fs.Var(&cidrs, "cidr", "allowed client CIDR (repeatable)")
	rf := redisFlags(fs)
	if err := config.ParseAll(fs, args); errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(env.Stdout, keyUsage+"\nkey create flags:\n")
		fs.SetOutput(env.Stdout)
		fs.PrintDefaults()
		return nil
	} else if err != nil {
		fmt.Fprintf(env.Stderr, "extauthz key create:\n%s\n", indent(err))
		return errUsage
	}
	if *id == "" {
		return fmt.Errorf("--id is required")
	}
	if *expires != "" {
		if _, err := time.Parse(time.RFC3339, *expires); err != nil {
			return fmt.Errorf("--expires: %q is not RFC 3339", *expires)
		}
	}
	key := *prefix + rand.Text() // 26 base32 characters, 130 bits
	rec := apikey.Record{ID: *id, Subject: *subject, Scopes: scopes, ExpiresAt: *expires, Plan: *plan, AllowedCIDRs: cidrs}
	if len(tenants) > 0 {
		rec.Tenants, _ = json.Marshal([]string(tenants))
	}
	// Validate the record exactly as the server will.
	recJSON, _ := json.Marshal(map[string]apikey.Record{apikey.Hash(key): rec})
	if _, err := apikey.Parse(recJSON); err != nil {
		return err
	}
	if *rf.addr != "" {
		w, done := rf.writer()
		defer done()
		b, _ := json.Marshal(rec)
		if err := w.Put(context.Background(), apikey.Hash(key), b); err != nil {
			return fmt.Errorf("redis %s: %w", *rf.addr, err)
		}
		fmt.Fprintf(env.Stdout, "key: %s\n\nstored in redis %s as %s\n", key, *rf.addr, rediskeys.Name(*rf.prefix, apikey.Hash(key)))
		return nil
	}
	pretty, _ := json.MarshalIndent(rec, "  ", "  ")
	fmt.Fprintf(env.Stdout, "key: %s\n\nrecord for extauthz.api_keys:\n  %q: %s\n", key, apikey.Hash(key), pretty)
	return nil
}

type redisOpts struct{ addr, prefix *string }

func redisFlags(fs *flag.FlagSet) redisOpts {
	return redisOpts{
		addr:   fs.String("redis", "", "Redis key store address, host:port (settings.api_keys_store.addr)"),
		prefix: fs.String("prefix-redis", rediskeys.DefaultPrefix, "Redis key name prefix (settings.api_keys_store.prefix)"),
	}
}

func (o redisOpts) writer() (rediskeys.Writer, func()) {
	c := redis.NewClient(&redis.Options{Addr: *o.addr, DisableIdentity: true})
	return rediskeys.Writer{Client: c, Prefix: *o.prefix}, func() { _ = c.Close() }
}

func parseKeyFlags(name string, fs *flag.FlagSet, args []string, env Env) (done bool, err error) {
	fs.SetOutput(env.Stderr)
	if err := config.ParseAll(fs, args); errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(env.Stdout, keyUsage+"\nkey "+name+" flags:\n")
		fs.SetOutput(env.Stdout)
		fs.PrintDefaults()
		return true, nil
	} else if err != nil {
		fmt.Fprintf(env.Stderr, "extauthz key %s:\n%s\n", name, indent(err))
		return true, errUsage
	}
	return false, nil
}

func keyImport(args []string, env Env) error {
	fs := flag.NewFlagSet("key import", flag.ContinueOnError)
	rf := redisFlags(fs)
	batch := fs.Int("batch", 1000, "records per pipelined round trip")
	file := fs.String("file", "-", "the api_keys JSON object; - is stdin")
	if done, err := parseKeyFlags("import", fs, args, env); done {
		return err
	}
	if *rf.addr == "" {
		return fmt.Errorf("--redis is required")
	}
	in := env.Stdin
	if p := *file; p != "-" {
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	w, done := rf.writer()
	defer done()
	start := time.Now()
	n, err := w.Import(context.Background(), bufio.NewReaderSize(in, 1<<20), *batch, nil)
	if err != nil {
		return fmt.Errorf("import into redis %s: %w (%d records stored before)", *rf.addr, err, n)
	}
	fmt.Fprintf(env.Stdout, "stored %d records in redis %s in %s\n", n, *rf.addr, time.Since(start).Round(time.Millisecond))
	return nil
}

func keyChange(op string, args []string, env Env) error {
	fs := flag.NewFlagSet("key "+op, flag.ContinueOnError)
	rf := redisFlags(fs)
	digest := fs.String("digest", "", "the key's SHA-256 (lower-case hex); without it the key is read from stdin")
	if done, err := parseKeyFlags(op, fs, args, env); done {
		return err
	}
	if *rf.addr == "" {
		return fmt.Errorf("--redis is required: embedded keys are changed in data.json")
	}
	if *digest == "" {
		line, err := bufio.NewReader(env.Stdin).ReadString('\n')
		if err != nil && err != io.EOF {
			return err
		}
		key := strings.TrimRight(line, "\r\n")
		if key == "" {
			return fmt.Errorf("no key given (--digest or the key on stdin)")
		}
		*digest = apikey.Hash(key)
	}
	if err := rediskeys.CheckDigest(*digest); err != nil {
		return fmt.Errorf("--digest: %w", err)
	}
	w, done := rf.writer()
	defer done()
	ctx := context.Background()
	var err error
	switch op {
	case "delete":
		err = w.Delete(ctx, *digest)
	default:
		err = w.SetStatus(ctx, *digest, map[string]string{"revoke": "revoked", "suspend": "suspended", "activate": "active"}[op])
	}
	if err != nil {
		return fmt.Errorf("redis %s: %w", *rf.addr, err)
	}
	fmt.Fprintf(env.Stdout, "%s: done (%s…)\n", op, (*digest)[:12])
	return nil
}
