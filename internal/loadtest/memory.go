package loadtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// MemoryPoint is one extauthz process's memory through a start and two
// reloads of a generated policy, in bytes (from /proc/<pid>/status).
type MemoryPoint struct {
	Ready     time.Duration // start to /readyz 200
	StartPeak int64         // VmHWM once ready: the peak of the whole start
	Idle      int64         // VmRSS Settle after ready
	// Traffic, after the reloads: one allowed check for each of
	// TrafficKeys distinct keys, then VmRSS Settle later (what serving
	// many keys leaves behind).
	TrafficKeys  int
	AfterTraffic int64
	// A reload of the same keys (data.json touched: every section rebuilt,
	// the key store shared by digest) and of a changed key set (as many
	// keys, none in common): VmHWM reset before the reload and read once
	// the new version serves, and VmRSS Settle later.
	SamePeak, SameAfter       int64
	ChangedPeak, ChangedAfter int64
	ChangedTook               time.Duration // SIGHUP to the new version serving
}

// MemoryReport is Memory's result.
type MemoryReport struct {
	Scale     Scale
	DataBytes int64
	Settle    time.Duration
	Points    []MemoryPoint // one per round, a fresh process each
}

// Memory measures extauthz's resident memory on a policy of size sc: for
// each round it starts a fresh process on it, reads its peak at start and
// its idle RSS, then reloads it (SIGHUP) with the same keys and with a
// changed key set and reads the peak of each reload, and last its RSS
// after one check for each of many keys (manyKeysTraffic). The peak of a
// reload is VmHWM after resetting it (writing 5 to /proc/<pid>/clear_refs,
// Linux ≥ 4.0), so it is the kernel's exact high-water mark, not a
// sample. A benchmark, not a test: it asserts nothing.
func Memory(ctx context.Context, cfg Config, sc Scale, workDir string, rounds int) (*MemoryReport, error) {
	cfg.defaults()
	r := &MemoryReport{Scale: sc, Settle: 2 * time.Second}
	a, b := filepath.Join(workDir, "mem-a"), filepath.Join(workDir, "mem-b")
	t0 := time.Now()
	if err := writeScaledPolicy(a, sc.Keys, sc.Tenants, sc.Routes, 0); err != nil {
		return nil, err
	}
	// The changed key set: as many keys, numbered after the first set's.
	if err := writeScaledPolicy(b, sc.Keys, sc.Tenants, sc.Routes, SyntheticKeys(sc.Keys)); err != nil {
		return nil, err
	}
	st, err := os.Stat(filepath.Join(a, "data.json"))
	if err != nil {
		return nil, err
	}
	r.DataBytes = st.Size()
	fmt.Fprintf(cfg.Log, "memory: keys=%d: two data.json of %s written in %s\n", sc.Keys, mib(r.DataBytes), time.Since(t0).Round(time.Millisecond))
	dir := filepath.Join(workDir, "mem-policy")
	for round := range max(rounds, 1) {
		p, err := memoryRound(ctx, cfg, sc, dir, a, b, r.Settle)
		if err != nil {
			return r, fmt.Errorf("memory round %d: %w", round+1, err)
		}
		fmt.Fprintf(cfg.Log, "memory round %d: ready %s, start peak %s, idle %s, after checks of %d keys %s, same-keys reload peak %s, changed-keys reload peak %s\n",
			round+1, p.Ready.Round(time.Millisecond), mib(p.StartPeak), mib(p.Idle), p.TrafficKeys, mib(p.AfterTraffic), mib(p.SamePeak), mib(p.ChangedPeak))
		r.Points = append(r.Points, p)
	}
	return r, nil
}

func memoryRound(ctx context.Context, cfg Config, sc Scale, dir, a, b string, settle time.Duration) (MemoryPoint, error) {
	var p MemoryPoint
	if err := os.RemoveAll(dir); err != nil {
		return p, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return p, err
	}
	if err := linkPolicy(a, dir); err != nil {
		return p, err
	}
	args := append([]string{"--reload-interval", "0", "--decision-log", "none"}, cfg.ExtauthzArgs...)
	ex, err := StartExtauthz(ctx, cfg.ExtauthzBin, dir, cfg.ReadyTimeout, args...)
	if err != nil {
		return p, err
	}
	defer ex.Stop()
	p.Ready = ex.Ready
	pid := ex.Pid()
	m, err := ReadProcMem(pid)
	if err != nil {
		return p, err
	}
	p.StartPeak = m.Peak
	if p.Idle, err = rssAfter(ctx, pid, settle); err != nil {
		return p, err
	}

	reload := func(change func() error) (peak, after int64, took time.Duration, err error) {
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
			return 0, 0, 0, fmt.Errorf("reset the peak RSS: %w", err)
		}
		before, err := loadedAt(ctx, ex.AdminAddr)
		if err != nil {
			return 0, 0, 0, err
		}
		if err := change(); err != nil {
			return 0, 0, 0, err
		}
		t0 := time.Now()
		if err := ex.Signal(syscall.SIGHUP); err != nil {
			return 0, 0, 0, err
		}
		for {
			now, err := loadedAt(ctx, ex.AdminAddr)
			if err != nil {
				return 0, 0, 0, err
			}
			if now != before {
				break
			}
			if time.Since(t0) > cfg.ReadyTimeout {
				return 0, 0, 0, fmt.Errorf("no new version %s after SIGHUP; stderr:\n%s", cfg.ReadyTimeout, ex.Stderr())
			}
			select {
			case <-ctx.Done():
				return 0, 0, 0, ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
		took = time.Since(t0)
		m, err := ReadProcMem(pid)
		if err != nil {
			return 0, 0, 0, err
		}
		after, err = rssAfter(ctx, pid, settle)
		return m.Peak, after, took, err
	}
	touch := func() error {
		t := time.Now()
		return os.Chtimes(filepath.Join(dir, "data.json"), t, t)
	}
	if p.SamePeak, p.SameAfter, _, err = reload(touch); err != nil {
		return p, fmt.Errorf("same-keys reload: %w", err)
	}
	if p.ChangedPeak, p.ChangedAfter, p.ChangedTook, err = reload(func() error { return linkPolicy(b, dir) }); err != nil {
		return p, fmt.Errorf("changed-keys reload: %w", err)
	}
	// Last, so that the reloads start from an idle process: traffic over the
	// keys now serving (the changed set, numbered after the first).
	if p.TrafficKeys, err = manyKeysTraffic(ctx, ex.GRPCAddr, sc, SyntheticKeys(sc.Keys)); err != nil {
		return p, fmt.Errorf("traffic: %w", err)
	}
	if p.AfterTraffic, err = rssAfter(ctx, pid, settle); err != nil {
		return p, err
	}
	return p, nil
}

// MemoryTrafficKeys bounds the distinct keys Memory sends checks for.
const MemoryTrafficKeys = 200000

// manyKeysTraffic sends one check, which should be allowed, for each of up
// to MemoryTrafficKeys synthetic keys of sc, spread evenly over them, each
// with its tenant, from its tenant's allowlist, on a synthetic route (keys
// numbered from first, as writeScaledPolicy numbers them): what
// a fleet of clients, each with its own key, leaves in the sidecar. It
// returns how many keys it used; more than 1% of checks not allowed (a
// deny at the deadline on a busy machine is possible, a wrong setup is
// not) or any gRPC error fails it.
func manyKeysTraffic(ctx context.Context, addr string, sc Scale, first int) (int, error) {
	n := SyntheticKeys(sc.Keys)
	k := min(n, MemoryTrafficKeys)
	if k == 0 {
		return 0, nil
	}
	p, err := Dial(addr, 4)
	if err != nil {
		return 0, err
	}
	defer p.Close()
	var next, denied atomic.Int64
	var firstDeny atomic.Value
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			client := authv3.NewAuthorizationClient(p.conns[w%len(p.conns)])
			for {
				j := int(next.Add(1)) - 1
				if j >= k {
					return
				}
				key := first + j*n/k
				c := Case{Method: "GET", Path: "/v1/orders/17", Want: 200,
					Headers: map[string]string{"x-api-key": SyntheticKey(key), "x-tenant-id": fmt.Sprint(SyntheticKeyTenant(key, sc.Tenants))}}
				if sc.Tenants > 0 {
					c.Source = tenantAddr(key % sc.Tenants)
				}
				if sc.Routes > 0 {
					c.Path = SyntheticRoutePath(key%sc.Routes) + "/1"
				}
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				resp, err := client.Check(cctx, c.Request())
				cancel()
				if err != nil {
					errs <- err
					next.Store(int64(k)) // stop every worker
					return
				}
				if got := Decision(resp); got != c.Want {
					denied.Add(1)
					firstDeny.CompareAndSwap(nil, fmt.Sprintf("key %d: status %d", key, got))
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return k, err
	}
	if d := denied.Load(); d*100 > int64(k) {
		return k, fmt.Errorf("%d of %d checks not allowed (first: %v)", d, k, firstDeny.Load())
	}
	return k, nil
}

// linkPolicy makes dst's files hard links to src's (data.json replaced by
// a rename, so a reader never sees half of it).
func linkPolicy(src, dst string) error {
	ents, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range ents {
		tmp := filepath.Join(dst, "."+e.Name()+".tmp")
		_ = os.Remove(tmp)
		if err := os.Link(filepath.Join(src, e.Name()), tmp); err != nil {
			return err
		}
		if err := os.Rename(tmp, filepath.Join(dst, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func rssAfter(ctx context.Context, pid int, d time.Duration) (int64, error) {
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(d):
	}
	m, err := ReadProcMem(pid)
	return m.RSS, err
}

// loadedAt is the serving version's loaded_at from /readyz.
func loadedAt(ctx context.Context, admin string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/readyz", nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var body struct {
		Policy struct {
			LoadedAt string `json:"loaded_at"`
		} `json:"policy"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&body); err != nil {
		return "", fmt.Errorf("/readyz: %w", err)
	}
	if body.Policy.LoadedAt == "" {
		return "", errors.New("/readyz: no policy.loaded_at")
	}
	return body.Policy.LoadedAt, nil
}

// Markdown writes one row per round and the median row, with each peak's
// ratio to the idle RSS.
func (r *MemoryReport) Markdown(w io.Writer) {
	fmt.Fprintf(w, "keys=%d tenants=%d routes=%d, data.json %s; RSS from /proc/<pid>/status (peaks: VmHWM, reset before each reload; idle and after: VmRSS %s later)\n\n",
		r.Scale.Keys, r.Scale.Tenants, r.Scale.Routes, mib(r.DataBytes), r.Settle)
	fmt.Fprintln(w, "| round | ready | idle RSS | peak at start | after checks of N keys | reload, same keys: peak / after | reload, changed keys: peak / after | changed reload took |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|")
	row := func(name string, p MemoryPoint) {
		ratio := func(v int64) string {
			if p.Idle <= 0 {
				return ""
			}
			return fmt.Sprintf(" (%.2f×)", float64(v)/float64(p.Idle))
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s%s | %s (N=%d)%s | %s%s / %s | %s%s / %s | %s |\n", name,
			p.Ready.Round(10*time.Millisecond), mib(p.Idle), mib(p.StartPeak), ratio(p.StartPeak),
			mib(p.AfterTraffic), p.TrafficKeys, ratio(p.AfterTraffic),
			mib(p.SamePeak), ratio(p.SamePeak), mib(p.SameAfter),
			mib(p.ChangedPeak), ratio(p.ChangedPeak), mib(p.ChangedAfter), p.ChangedTook.Round(10*time.Millisecond))
	}
	for i, p := range r.Points {
		row(fmt.Sprint(i+1), p)
	}
	if len(r.Points) > 1 {
		row("median", r.median())
	}
}

func (r *MemoryReport) median() MemoryPoint {
	med := func(f func(MemoryPoint) int64) int64 {
		v := make([]int64, len(r.Points))
		for i, p := range r.Points {
			v[i] = f(p)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	return MemoryPoint{
		Ready:        time.Duration(med(func(p MemoryPoint) int64 { return int64(p.Ready) })),
		StartPeak:    med(func(p MemoryPoint) int64 { return p.StartPeak }),
		Idle:         med(func(p MemoryPoint) int64 { return p.Idle }),
		TrafficKeys:  int(med(func(p MemoryPoint) int64 { return int64(p.TrafficKeys) })),
		AfterTraffic: med(func(p MemoryPoint) int64 { return p.AfterTraffic }),
		SamePeak:     med(func(p MemoryPoint) int64 { return p.SamePeak }),
		SameAfter:    med(func(p MemoryPoint) int64 { return p.SameAfter }),
		ChangedPeak:  med(func(p MemoryPoint) int64 { return p.ChangedPeak }),
		ChangedAfter: med(func(p MemoryPoint) int64 { return p.ChangedAfter }),
		ChangedTook:  time.Duration(med(func(p MemoryPoint) int64 { return int64(p.ChangedTook) })),
	}
}
