// Package wire holds what the load generator and the Go server share: the v1 frame
// layout (docs/architecture.md), the benchmark's payload (the planned send time), the
// monotonic clock both sides read, and a log-linear latency histogram.
package wire

import (
	"crypto/sha256"
	"encoding/binary"
	"math/bits"
	_ "unsafe" // go:linkname
)

const (
	HeaderBytes  = 24
	TagBytes     = 32
	PayloadBytes = 64
	FrameBytes   = HeaderBytes + PayloadBytes + TagBytes // 120
	Magic0       = 0x4d
	Magic1       = 0x56
	Version      = 1
	// Payload layout of this benchmark: bytes 0..8 the planned send time (CLOCK_MONOTONIC ns,
	// u64 LE), byte 8 = 1 when the move belongs to the measured window.
	StampAt    = HeaderBytes
	MeasuredAt = HeaderBytes + 8
)

// Nanotime is CLOCK_MONOTONIC in ns: the clock Node's process.hrtime reads too, so a
// stamp taken here is comparable with one taken in another process on the machine.
//
//go:linkname Nanotime runtime.nanotime
func Nanotime() int64

// Encode writes one SHA-256-tagged v1 frame with a 64-byte payload into out[0:120].
func Encode(out []byte, room, player, seq, tick uint32, stamp int64, measured bool) {
	out[0], out[1], out[2], out[3] = Magic0, Magic1, Version, 0
	binary.LittleEndian.PutUint32(out[4:], room)
	binary.LittleEndian.PutUint32(out[8:], player)
	binary.LittleEndian.PutUint32(out[12:], seq)
	binary.LittleEndian.PutUint32(out[16:], tick)
	binary.LittleEndian.PutUint16(out[20:], 0)
	binary.LittleEndian.PutUint16(out[22:], PayloadBytes)
	p := out[HeaderBytes : HeaderBytes+PayloadBytes]
	clear(p)
	binary.LittleEndian.PutUint64(p, uint64(stamp))
	if measured {
		p[8] = 1
	}
	sum := sha256.Sum256(out[:HeaderBytes+PayloadBytes])
	copy(out[HeaderBytes+PayloadBytes:FrameBytes], sum[:])
}

// Histogram: exact below 128, then 128 sub-buckets per power of two (as bench/lib/hist.ts).
type Histogram struct {
	Counts [128 + 40*128]uint64
	Count  uint64
	Max    int64
}

func index(v int64) int {
	if v < 128 {
		if v < 0 {
			return 0
		}
		return int(v)
	}
	e := 63 - bits.LeadingZeros64(uint64(v))
	m := int(v >> (e - 7)) // in [128, 256)
	i := 128 + (e-7)*128 + (m - 128)
	if i >= 128+40*128 {
		i = 128 + 40*128 - 1
	}
	return i
}

func highest(i int) int64 {
	if i < 128 {
		return int64(i)
	}
	e := (i-128)/128 + 7
	m := int64((i-128)%128 + 128)
	unit := int64(1) << (e - 7)
	return (m+1)*unit - 1
}

func (h *Histogram) Record(v int64) {
	h.Counts[index(v)]++
	h.Count++
	if v > h.Max {
		h.Max = v
	}
}

func (h *Histogram) Percentile(p float64) int64 {
	if h.Count == 0 {
		return -1
	}
	rank := uint64(p / 100 * float64(h.Count))
	if float64(rank) < p/100*float64(h.Count) {
		rank++
	}
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i, c := range h.Counts {
		seen += c
		if seen >= rank {
			return min(highest(i), h.Max)
		}
	}
	return h.Max
}

// Summary in ns (-1 when empty).
type Summary struct {
	Count uint64 `json:"count"`
	P50   int64  `json:"p50"`
	P99   int64  `json:"p99"`
	P999  int64  `json:"p999"`
	Max   int64  `json:"max"`
}

func (h *Histogram) Summary() Summary {
	return Summary{Count: h.Count, P50: h.Percentile(50), P99: h.Percentile(99), P999: h.Percentile(99.9), Max: h.Max}
}
