// Package logbuf batches log lines: one write system call per batch instead
// of one per record (decision logs are written for every check). Records are
// never split: a record that does not fit flushes the batch first. The batch
// is flushed every interval and on Close.
package logbuf

import (
	"bufio"
	"io"
	"sync"
	"time"
)

// Writer is a line-atomic buffered writer, safe for concurrent use.
type Writer struct {
	mu   sync.Mutex
	w    *bufio.Writer
	stop chan struct{}
	done chan struct{}
}

// New buffers up to size bytes for at most every.
func New(w io.Writer, size int, every time.Duration) *Writer {
	b := &Writer{w: bufio.NewWriterSize(w, size), stop: make(chan struct{}), done: make(chan struct{})}
	go b.loop(every)
	return b
}

func (b *Writer) loop(every time.Duration) {
	defer close(b.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
			_ = b.Flush()
		}
	}
}

// Write adds one record (slog handlers write one record per call).
func (b *Writer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(p) > b.w.Available() && b.w.Buffered() > 0 {
		if err := b.w.Flush(); err != nil {
			return 0, err
		}
	}
	return b.w.Write(p)
}

// Flush writes out what is buffered.
func (b *Writer) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.w.Flush()
}

// Close stops the timer and flushes.
func (b *Writer) Close() error {
	select {
	case <-b.stop:
	default:
		close(b.stop)
		<-b.done
	}
	return b.Flush()
}
