package h1

import (
	"io"
	"net"
	"sync"
)

// The sizes of a connection's write buffer: what it holds while idle, and
// what it may grow to while an answer is being written.
const (
	smallWrite = 4 << 10
	bigWrite   = MaxBytes // what Coalesce may hold back of a stream, so that it goes out in one write
)

var bigWrites = sync.Pool{New: func() any { b := make([]byte, 0, bigWrite); return &b }}

// writeBuffer holds what is written to a connection (the server's answers,
// the Transport's requests) until Flush, as bufio.Writer does, with two
// differences that save system calls:
//
//   - When a write does not fit in its 4 KB, it grows to bigWrite (a buffer
//     from a pool) instead of writing the full buffer out and keeping the
//     rest: an answer, or a stream's reads written together, of up to
//     bigWrite goes out in one write at Flush instead of two or three.
//   - What does not fit even then goes out with what is held in one writev
//     (net.Buffers) instead of a write of each.
//
// Flush gives the grown buffer back, so that an idle connection holds only
// its 4 KB. The first write that fails is kept and returned by every later
// call; what was held is dropped with it (the connection is finished).
type writeBuffer struct {
	w     io.Writer
	buf   []byte      // what is held; cap that of small, or bigWrite while grown
	small []byte      // the connection's own buffer, kept while grown
	big   *[]byte     // the grown buffer, from bigWrites; nil if not grown
	vec   [2][]byte   // what is held and the write that does not fit
	bufs  net.Buffers // over vec: net.Buffers.WriteTo consumes its slice
	err   error
}

var writeBufs = sync.Pool{New: func() any { return newOwnWriteBuffer(nil, smallWrite) }}

// newOwnWriteBuffer returns a buffer of its own (not pooled) writing to w,
// holding size bytes while idle.
func newOwnWriteBuffer(w io.Writer, size int) *writeBuffer {
	b := &writeBuffer{w: w, small: make([]byte, 0, size)}
	b.buf = b.small
	return b
}

// newWriteBuffer returns a pooled buffer writing to w.
func newWriteBuffer(w io.Writer) *writeBuffer {
	b := writeBufs.Get().(*writeBuffer)
	b.w = w
	return b
}

// release returns b to the pool; b must not be used after.
func (b *writeBuffer) release() {
	b.shrink()
	b.buf, b.w, b.err = b.small[:0], nil, nil
	writeBufs.Put(b)
}

// AvailableBuffer returns an empty slice over the free end of the buffer,
// to append to and pass to Write without a copy.
func (b *writeBuffer) AvailableBuffer() []byte { return b.buf[len(b.buf):][:0] }

func (b *writeBuffer) Write(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if len(b.buf)+len(p) > cap(b.buf) && !b.grow(len(b.buf)+len(p)) {
		// Too much to hold: what is held and p go out in one writev.
		var err error
		if len(b.buf) == 0 {
			_, err = b.w.Write(p)
		} else {
			b.vec[0], b.vec[1] = b.buf, p
			b.bufs = b.vec[:]
			_, err = b.bufs.WriteTo(b.w)
			b.vec[0], b.vec[1] = nil, nil
			b.buf = b.buf[:0]
		}
		if err != nil {
			b.err = err
			return 0, err
		}
		return len(p), nil
	}
	b.buf = append(b.buf, p...)
	return len(p), nil
}

func (b *writeBuffer) WriteString(s string) (int, error) {
	if b.err == nil && (len(b.buf)+len(s) <= cap(b.buf) || b.grow(len(b.buf)+len(s))) {
		b.buf = append(b.buf, s...)
		return len(s), nil
	}
	// More than even the grown buffer holds (or a failed connection):
	// rare for strings, which are header lines and framing, so the copy
	// does not matter.
	return b.Write([]byte(s))
}

func (b *writeBuffer) WriteByte(c byte) error {
	if b.err != nil {
		return b.err
	}
	if len(b.buf) == cap(b.buf) && !b.grow(len(b.buf)+1) {
		if err := b.Flush(); err != nil {
			return err
		}
	}
	b.buf = append(b.buf, c)
	return nil
}

// ReadFrom reads r to its end into the buffer, as the body of a request
// after its header: a request of up to bigWrite goes out in one write at
// Flush, a longer one a full buffer at a time.
func (b *writeBuffer) ReadFrom(r io.Reader) (int64, error) {
	if b.err != nil {
		return 0, b.err
	}
	var n int64
	for {
		if len(b.buf) == cap(b.buf) && !b.grow(len(b.buf)+1) {
			if _, err := b.w.Write(b.buf); err != nil {
				b.err = err
				return n, err
			}
			b.buf = b.buf[:0]
		}
		m, err := r.Read(b.buf[len(b.buf):cap(b.buf)])
		b.buf = b.buf[:len(b.buf)+m]
		n += int64(m)
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// grow makes room for n bytes, if n is at most bigWrite.
func (b *writeBuffer) grow(n int) bool {
	if n > bigWrite || b.big != nil {
		return false
	}
	b.big = bigWrites.Get().(*[]byte)
	b.buf = append((*b.big)[:0], b.buf...)
	return true
}

// shrink gives the grown buffer back, with what it holds.
func (b *writeBuffer) shrink() {
	if b.big != nil {
		*b.big = b.buf[:0]
		bigWrites.Put(b.big)
		b.big = nil
		b.buf = b.small[:0]
	}
}

// Flush writes what is held, in one write, and gives back a grown buffer.
func (b *writeBuffer) Flush() error {
	if b.err != nil {
		return b.err
	}
	if len(b.buf) > 0 {
		_, err := b.w.Write(b.buf)
		b.buf = b.buf[:0]
		if err != nil {
			b.err = err
		}
	}
	b.shrink()
	return b.err
}
