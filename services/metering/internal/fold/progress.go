package fold

import "slices"

// Progress is what metering has folded of one (edge instance, partition):
// every sequence up to Watermark, and the few above it that arrived early
// (an edge re-publishing a failed batch can deliver out of order). It is the
// "few bytes of state per edge" that recognise a redelivery forever.
type Progress struct {
	Watermark uint64
	Above     []uint64 // sorted, all > Watermark
}

// Seen reports whether seq was folded.
func (p *Progress) Seen(seq uint64) bool {
	if seq <= p.Watermark {
		return true
	}
	_, found := slices.BinarySearch(p.Above, seq)
	return found
}

// Add records seq as folded and moves the watermark over what is now
// contiguous. It reports false if seq had been folded already.
func (p *Progress) Add(seq uint64) bool {
	if p.Seen(seq) {
		return false
	}
	i, _ := slices.BinarySearch(p.Above, seq)
	p.Above = slices.Insert(p.Above, i, seq)
	for len(p.Above) > 0 && p.Above[0] == p.Watermark+1 {
		p.Watermark++
		p.Above = p.Above[1:]
	}
	if len(p.Above) == 0 {
		p.Above = nil
	}
	return true
}
