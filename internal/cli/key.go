package cli

import (
	"bufio"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/extauthz/extauthz/internal/authn/apikey"
	"github.com/extauthz/extauthz/internal/config"
)

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

const keyUsage = `Usage:
  extauthz key create --id ID [--subject S] [--tenant T]... [--scope S]... [--expires RFC3339] [--plan P] [--cidr C]... [--prefix xa_]
      Prints the new key (shown once; store it in your secret manager) and the
      record to paste into extauthz.api_keys in data.json (keyed by SHA-256; the key itself is never stored).
  extauthz key hash [KEY]
      Prints the SHA-256 record key of an existing key (read from stdin when not given).
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
	}
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
	pretty, _ := json.MarshalIndent(rec, "  ", "  ")
	fmt.Fprintf(env.Stdout, "key: %s\n\nrecord for extauthz.api_keys:\n  %q: %s\n", key, apikey.Hash(key), pretty)
	return nil
}
