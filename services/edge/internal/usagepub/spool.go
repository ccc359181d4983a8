package usagepub

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
)

// spool is an append-only file of usage events that could not be published:
// each record is a uvarint length and a marshalled UsageEvent. Events are
// replayed in the order they were spooled, which is sequence order.
type spool struct {
	dir  string
	path string
	f    *os.File
	n    int // records in the file
}

func openSpool(dir, instance string) (*spool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool dir: %w", err)
	}
	s := &spool{dir: dir, path: filepath.Join(dir, instance+".spool")}
	f, err := os.OpenFile(s.path, os.O_CREATE|os.O_RDWR|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open spool: %w", err)
	}
	s.f = f
	return s, nil
}

// append writes events and syncs: once append returns, a crash of the edge
// does not lose them.
func (s *spool) append(evs []*eventsv1.UsageEvent) error {
	if len(evs) == 0 {
		return nil
	}
	w := bufio.NewWriter(s.f)
	var lenBuf [binary.MaxVarintLen64]byte
	for _, ev := range evs {
		data, err := proto.Marshal(ev)
		if err != nil {
			return fmt.Errorf("spool: marshal: %w", err)
		}
		w.Write(lenBuf[:binary.PutUvarint(lenBuf[:], uint64(len(data)))])
		w.Write(data)
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("spool: write: %w", err)
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("spool: sync: %w", err)
	}
	s.n += len(evs)
	return nil
}

func (s *spool) empty() bool { return s.n == 0 }

// readAll reads every record of the file at path. A torn last record (the
// edge died mid-write) is dropped: it was never acknowledged to anyone.
func readAll(path string) ([]*eventsv1.UsageEvent, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := bufio.NewReader(f)
	var out []*eventsv1.UsageEvent
	for {
		n, err := binary.ReadUvarint(r)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil || n > 1<<20 {
			return out, nil
		}
		buf := make([]byte, n)
		if _, err := io.ReadFull(r, buf); err != nil {
			return out, nil
		}
		ev := new(eventsv1.UsageEvent)
		if err := proto.Unmarshal(buf, ev); err != nil {
			return out, fmt.Errorf("spool %s: corrupt record: %w", path, err)
		}
		out = append(out, ev)
	}
}

// events returns what this spool holds.
func (s *spool) events() ([]*eventsv1.UsageEvent, error) { return readAll(s.path) }

// reset empties the spool after everything in it was published.
func (s *spool) reset() error {
	if err := s.f.Truncate(0); err != nil {
		return fmt.Errorf("spool: truncate: %w", err)
	}
	s.n = 0
	return nil
}

// orphans lists spool files of earlier edge processes in the same dir.
func (s *spool) orphans() []string {
	matches, _ := filepath.Glob(filepath.Join(s.dir, "*.spool"))
	var out []string
	for _, m := range matches {
		if m != s.path {
			out = append(out, m)
		}
	}
	sort.Strings(out)
	return out
}

func (s *spool) close() error { return s.f.Close() }
