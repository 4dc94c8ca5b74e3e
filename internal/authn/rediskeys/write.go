package rediskeys

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/redis/go-redis/v9"

	"github.com/extauthz/extauthz/internal/authn/apikey"
	"github.com/extauthz/extauthz/internal/jsonx"
)

// The writers below are what `extauthz key ... --redis` runs. Each change
// is written and its digest published on the invalidation channel in one
// MULTI, so no sidecar misses a change it could have cached.

// Writer changes records in the store cfg names (Prefix; Addr is the
// client's).
type Writer struct {
	Client *redis.Client
	Prefix string
}

func (w Writer) channel() string { return (&Config{Prefix: w.Prefix}).Channel() }

// CheckDigest refuses anything but a lower-case hex SHA-256: a plaintext
// key is never written (nor echoed).
func CheckDigest(digest string) error {
	if b, err := hex.DecodeString(digest); err != nil || len(b) != 32 || hex.EncodeToString(b) != digest {
		return errors.New("not a lower-case hex SHA-256 (64 characters); plaintext keys are not accepted")
	}
	return nil
}

// Put validates record and stores it under digest, replacing any record
// there, and publishes the change.
func (w Writer) Put(ctx context.Context, digest string, record []byte) error {
	if err := CheckDigest(digest); err != nil {
		return err
	}
	if _, err := apikey.ParseRecord(record); err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, record); err != nil {
		return err
	}
	_, err := w.Client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, Name(w.Prefix, digest), buf.String(), 0)
		p.Publish(ctx, w.channel(), digest)
		return nil
	})
	return err
}

// ErrNotFound is returned for a digest with no record.
var ErrNotFound = errors.New("no record for this key")

// SetStatus sets the status of the record under digest (active, revoked,
// suspended) and publishes the change; the rest of the record is kept.
func (w Writer) SetStatus(ctx context.Context, digest, status string) error {
	if err := CheckDigest(digest); err != nil {
		return err
	}
	name := Name(w.Prefix, digest)
	return w.Client.Watch(ctx, func(tx *redis.Tx) error {
		raw, err := tx.Get(ctx, name).Bytes()
		if errors.Is(err, redis.Nil) {
			return ErrNotFound
		} else if err != nil {
			return err
		}
		var r apikey.Record
		if err := jsonx.Strict(raw, &r); err != nil {
			return fmt.Errorf("stored record: %w", err)
		}
		r.Status = status
		b, _ := json.Marshal(r)
		if _, err := apikey.ParseRecord(b); err != nil {
			return err
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, name, b, 0)
			p.Publish(ctx, w.channel(), digest)
			return nil
		})
		return err
	}, name)
}

// Delete removes the record under digest and publishes the change.
func (w Writer) Delete(ctx context.Context, digest string) error {
	if err := CheckDigest(digest); err != nil {
		return err
	}
	var del *redis.IntCmd
	_, err := w.Client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		del = p.Del(ctx, Name(w.Prefix, digest))
		p.Publish(ctx, w.channel(), digest)
		return nil
	})
	if err == nil && del.Val() == 0 {
		return ErrNotFound
	}
	return err
}

// Import reads an extauthz.api_keys object (digest -> record) from r and
// stores every record, batch SETs per pipelined round trip, validating each
// as the server will. It stops at the first record that does not validate,
// naming it (the records before it are stored). When done it publishes
// "*": every sidecar drops its cache, and reads what it needs again.
// progress, if set, is called after every batch with the records stored.
func (w Writer) Import(ctx context.Context, r io.Reader, batch int, progress func(n int)) (int, error) {
	batch = max(batch, 1)
	dec := json.NewDecoder(r)
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return 0, errors.New("api_keys: must be an object of key digest -> record")
	}
	p := w.Client.Pipeline()
	n, pending := 0, 0
	flush := func() error {
		if pending == 0 {
			return nil
		}
		if _, err := p.Exec(ctx); err != nil {
			return fmt.Errorf("after %d records: %w", n, err)
		}
		n += pending
		pending = 0
		if progress != nil {
			progress(n)
		}
		return nil
	}
	var buf bytes.Buffer
	for i := 1; dec.More(); i++ {
		tok, err := dec.Token()
		if err != nil {
			return n, fmt.Errorf("api_keys: entry %d: %w", i, err)
		}
		digest, _ := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return n, fmt.Errorf("api_keys: entry %d: %w", i, err)
		}
		if err := CheckDigest(digest); err != nil {
			return n, fmt.Errorf("api_keys: entry %d: key %w", i, err)
		}
		if _, err := apikey.ParseRecord(raw); err != nil {
			return n, jsonx.At(fmt.Sprintf("api_keys[%q]", digest[:12]+"…"), err)
		}
		buf.Reset()
		_ = json.Compact(&buf, raw)
		p.Set(ctx, Name(w.Prefix, digest), buf.String(), 0)
		if pending++; pending == batch {
			if err := flush(); err != nil {
				return n, err
			}
		}
	}
	if _, err := dec.Token(); err != nil {
		return n, fmt.Errorf("api_keys: %w", err)
	}
	if err := flush(); err != nil {
		return n, err
	}
	return n, w.Client.Publish(ctx, w.channel(), "*").Err()
}
