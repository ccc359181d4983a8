package usagepub

import (
	"bufio"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync/atomic"
	"syscall"

	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
)

// spool is an append-only file of usage events that could not be published:
// each record is a uvarint length and a marshalled UsageEvent. Events are
// replayed in the order they were spooled, which is sequence order.
//
// Edges on one host may share the spool dir. Each holds an exclusive flock
// on its own spool for as long as it is open (the kernel drops it when the
// process dies): a spool that can be locked is an orphan, one that cannot
// belongs to a live edge and is left alone.
type spool struct {
	dir  string
	path string
	f    *os.File     // locked
	n    atomic.Int64 // records in the file; read by tests while Run writes
}

// errLocked: another process holds the spool's lock.
var errLocked = errors.New("spool in use by another edge process")

// openSpool opens (creating it if need be) and locks the spool of instance.
// A file that is there already keeps its records: they are counted, so that
// the publisher replays them, and a torn last record is cut off, so that
// what is appended next can be read back.
func openSpool(dir, instance string) (*spool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool dir: %w", err)
	}
	s := &spool{dir: dir, path: filepath.Join(dir, instance+".spool")}
	f, err := lockOwn(s.path)
	if err != nil {
		return nil, fmt.Errorf("open spool: %w", err)
	}
	s.f = f
	if err := s.load(); err != nil {
		f.Close()
		return nil, err
	}
	return s, nil
}

// load counts the records in the file and cuts off a torn last one.
func (s *spool) load() error {
	evs, size, err := readRecords(s.f)
	if err != nil {
		return err
	}
	fi, err := s.f.Stat()
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	if fi.Size() > size {
		if err := s.f.Truncate(size); err != nil {
			return fmt.Errorf("spool: cut off a torn record: %w", err)
		}
	}
	s.n.Store(int64(len(evs)))
	return nil
}

// lockOwn opens this process's spool at path, creating it if need be, and
// takes its lock.
func lockOwn(path string) (*os.File, error) {
	for {
		f, err := lockExisting(path, os.O_RDWR|os.O_APPEND)
		if !errors.Is(err, fs.ErrNotExist) {
			return f, err
		}
		f, err = createLocked(path)
		if !errors.Is(err, fs.ErrExist) {
			return f, err
		}
		// Another process created it in between: open that one.
	}
}

// createLocked creates the spool at path and locks it. It is created under a
// temporary name and linked into place once locked: a starting edge that saw
// it unlocked under its .spool name would take it for an orphan and remove
// it. It fails with fs.ErrExist when there is a file at path.
func createLocked(path string) (*os.File, error) {
	tmp := path + "." + rand.Text() + ".new" // no .spool suffix: no orphan
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_RDWR|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp) //nolint:errcheck // path is the name that counts
	if err = lock(f); err == nil {
		err = os.Link(tmp, path)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// lockOrphan opens and locks the spool of another edge process, to adopt it.
// It fails with errLocked when that process still runs, and with
// fs.ErrNotExist when another edge adopted it first.
func lockOrphan(path string) (*os.File, error) { return lockExisting(path, os.O_RDONLY) }

// lockExisting opens the file at path and locks it, without waiting. It
// fails with errLocked when another process holds the lock, and with
// fs.ErrNotExist when there is no file at path or no longer the one it
// opened: the edge that held the lock adopted and removed it.
func lockExisting(path string, flag int) (*os.File, error) {
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, err
	}
	if err = lock(f); err == nil {
		err = stillAt(f, path)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// lock takes f's exclusive lock, or fails with errLocked. flock locks
// belong to the open file: another open of the same file, in this process
// too, does not get it.
func lock(f *os.File) error {
	err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return fmt.Errorf("%s: %w", f.Name(), errLocked)
	}
	if err != nil {
		return fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	return nil
}

// stillAt fails with fs.ErrNotExist unless path names the file f.
func stillAt(f *os.File, path string) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	pi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !os.SameFile(fi, pi) {
		return fmt.Errorf("%s: replaced: %w", path, fs.ErrNotExist)
	}
	return nil
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
	s.n.Add(int64(len(evs)))
	return nil
}

func (s *spool) empty() bool { return s.n.Load() == 0 }

// readAll reads every record of the file at path. A torn last record (the
// edge died mid-write) is dropped: it was never acknowledged to anyone.
func readAll(path string) ([]*eventsv1.UsageEvent, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	evs, _, err := readRecords(f)
	return evs, err
}

// readRecords reads the records of f from its start, as readAll does; size
// is the length of the whole ones.
func readRecords(f *os.File) (evs []*eventsv1.UsageEvent, size int64, err error) {
	r := bufio.NewReader(f)
	var lenBuf [binary.MaxVarintLen64]byte
	for {
		n, err := binary.ReadUvarint(r)
		if err != nil || n > 1<<20 {
			return evs, size, nil // the end, or a torn length
		}
		buf := make([]byte, n)
		if _, err := io.ReadFull(r, buf); err != nil {
			return evs, size, nil
		}
		ev := new(eventsv1.UsageEvent)
		if err := proto.Unmarshal(buf, ev); err != nil {
			return evs, size, fmt.Errorf("spool %s: corrupt record: %w", f.Name(), err)
		}
		evs = append(evs, ev)
		size += int64(binary.PutUvarint(lenBuf[:], n)) + int64(n)
	}
}

// events returns what this spool holds.
func (s *spool) events() ([]*eventsv1.UsageEvent, error) { return readAll(s.path) }

// reset empties the spool after everything in it was published.
func (s *spool) reset() error {
	if err := s.f.Truncate(0); err != nil {
		return fmt.Errorf("spool: truncate: %w", err)
	}
	s.n.Store(0)
	return nil
}

// orphans lists the other spool files in the same dir: those of earlier edge
// processes, and of edges that still run, which lockOrphan tells apart.
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

// close closes the file, which releases its lock. An empty spool is removed
// first, while still locked, so that a clean exit leaves nothing to adopt.
func (s *spool) close() error {
	if s.empty() {
		if err := os.Remove(s.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.f.Close()
			return fmt.Errorf("spool: remove the empty spool: %w", err)
		}
	}
	return s.f.Close()
}
