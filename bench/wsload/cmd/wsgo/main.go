// wsgo: the Go row of bench/ingress.ts — the server a Go expert would write for the same
// job as the package's native ingress: net/http + github.com/gorilla/websocket, one
// goroutine per connection, validation inline on that goroutine, moves handed to one
// consumer goroutine through per-room inboxes.
//
//   - Upgrade: beyond -cap open connections, 503 at once; the ticket (?ticket=, the
//     package's format: base64url of version, room, player, expiry, nonce and an
//     HMAC-SHA256 tag) is verified (tag, version, expiry; no single-use cache) → 401.
//   - Per message: every v1 frame of it is checked (magic, version, flags,
//     length ≤ 1024, seq ≥ 1), must be the ticket's room and player, a member of the room,
//     carry a valid SHA-256 tag (crypto/sha256, constant-time compare), and pass the
//     player's 128-wide replay window (under the room's lock); then it is copied into its
//     room's inbox and the consumer is woken if it sleeps.
//   - The consumer takes every non-empty inbox (swapping double buffers) and "holds" the
//     moves: it reads the clock once per room batch and records, per move, planned send
//     time → now (the stamp in the payload), for moves flagged as measured.
//
// Commands on stdin, one JSON line answered on stdout each: "stats", "reset".
package main

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"move-dispatcher/bench/wsload/internal/wire"
)

const windowBits = 128

type player struct {
	top  uint32
	bits [2]uint64 // bit i: seq top-i seen
}

type room struct {
	mu      sync.Mutex
	members map[uint32]*player
	inbox   []byte
	spare   []byte
	dirty   bool
}

type server struct {
	rooms    []*room
	key      []byte
	cap      int64
	open     atomic.Int64
	accepted atomic.Int64
	refused  atomic.Int64
	rejected [8]atomic.Int64

	dirtyMu sync.Mutex
	dirty   []*room
	wake    chan struct{}

	statsMu  sync.Mutex
	hist     wire.Histogram
	measured uint64
	received uint64
}

const (
	rMalformed = iota
	rOversize
	rWrongSender
	rNotMember
	rBadTag
	rReplay
	rUnknownRoom
)

var upgrader = websocket.Upgrader{
	ReadBufferSize:  1024,
	WriteBufferSize: 256,
	// Write buffers only while writing (the server writes nothing but control frames).
	WriteBufferPool: &sync.Pool{},
	CheckOrigin:     func(*http.Request) bool { return true },
}

var bufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func main() {
	port := flag.Int("port", 0, "port (0: any)")
	keyHex := flag.String("ticket-key", "", "ticket key, hex")
	rooms := flag.Int("rooms", 1000, "rooms")
	roomSize := flag.Int("room-size", 10, "players a room")
	capConns := flag.Int64("cap", 10000, "open connections at most (503 beyond)")
	flag.Parse()
	key, err := hex.DecodeString(*keyHex)
	if err != nil || len(key) < 16 {
		fmt.Fprintln(os.Stderr, "wsgo: -ticket-key: 16+ bytes of hex")
		os.Exit(2)
	}
	s := &server{key: key, cap: *capConns, wake: make(chan struct{}, 1)}
	for r := 0; r < *rooms; r++ {
		rm := &room{members: make(map[uint32]*player, *roomSize)}
		for p := 0; p < *roomSize; p++ {
			rm.members[uint32(r**roomSize+p)] = &player{}
		}
		s.rooms = append(s.rooms, rm)
	}
	go s.consume()
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", *port))
	if err != nil {
		fmt.Fprintln(os.Stderr, "wsgo:", err)
		os.Exit(1)
	}
	srv := &http.Server{Handler: http.HandlerFunc(s.upgrade), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	out := json.NewEncoder(os.Stdout)
	_ = out.Encode(map[string]any{"type": "ready", "port": ln.Addr().(*net.TCPAddr).Port, "pid": os.Getpid()})
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		switch strings.TrimSpace(sc.Text()) {
		case "stats":
			s.statsMu.Lock()
			sum := s.hist.Summary()
			rec, meas := s.received, s.measured
			s.statsMu.Unlock()
			rej := map[string]int64{}
			for i, name := range []string{"Malformed", "Oversize", "WrongSender", "NotMember", "BadTag", "Replay", "UnknownRoom"} {
				if v := s.rejected[i].Load(); v > 0 {
					rej[name] = v
				}
			}
			_ = out.Encode(map[string]any{"type": "stats", "received": rec, "measured": meas, "latencyNs": sum,
				"connections": s.open.Load(), "acceptedConnections": s.accepted.Load(), "refusedConnections": s.refused.Load(), "rejected": rej})
		case "reset":
			s.statsMu.Lock()
			s.hist = wire.Histogram{}
			s.measured, s.received = 0, 0
			s.statsMu.Unlock()
			_ = out.Encode(map[string]any{"type": "reset"})
		}
	}
}

// ticket checks a ticket of the package's format (src/ticket.ts): tag, version, expiry.
func (s *server) ticket(t string) (room, pl uint32, ok bool) {
	b, err := base64.RawURLEncoding.DecodeString(t)
	if err != nil || len(b) != 65 || b[0] != 1 {
		return 0, 0, false
	}
	m := hmac.New(sha256.New, s.key)
	m.Write(b[:33])
	if !hmac.Equal(m.Sum(nil), b[33:]) {
		return 0, 0, false
	}
	if int64(binary.LittleEndian.Uint64(b[9:17])) <= time.Now().UnixMilli() {
		return 0, 0, false
	}
	return binary.LittleEndian.Uint32(b[1:5]), binary.LittleEndian.Uint32(b[5:9]), true
}

func (s *server) upgrade(w http.ResponseWriter, r *http.Request) {
	if s.open.Add(1) > s.cap {
		s.open.Add(-1)
		s.refused.Add(1)
		w.Header().Set("Connection", "close")
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	room, pl, ok := s.ticket(r.URL.Query().Get("ticket"))
	if !ok || int(room) >= len(s.rooms) {
		s.open.Add(-1)
		s.refused.Add(1)
		http.Error(w, "bad ticket", http.StatusUnauthorized)
		return
	}
	c, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		s.open.Add(-1)
		s.refused.Add(1)
		return
	}
	s.accepted.Add(1)
	c.SetReadLimit(64 * 1024)
	// A goroutine of its own: the handler returns, and net/http's (deep) stack and the
	// request go with it.
	go func() {
		s.serve(c, room, pl)
		s.open.Add(-1)
		_ = c.Close()
	}()
}

func (s *server) serve(c *websocket.Conn, roomID, pl uint32) {
	rm := s.rooms[roomID]
	for {
		typ, rd, err := c.NextReader()
		if err != nil {
			return
		}
		if typ != websocket.BinaryMessage {
			return
		}
		bp := bufs.Get().(*[]byte)
		buf := (*bp)[:0]
		for {
			if len(buf) == cap(buf) {
				buf = append(buf, 0)[:len(buf)]
			}
			n, err := rd.Read(buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+n]
			if err == io.EOF {
				break
			}
			if err != nil {
				*bp = buf
				bufs.Put(bp)
				return
			}
		}
		bad := s.validate(rm, roomID, pl, buf)
		*bp = buf
		bufs.Put(bp)
		if bad {
			return
		}
	}
}

// validate checks every frame of one message and puts the valid ones in the room's inbox;
// true when the connection must close (not v1 frames).
func (s *server) validate(rm *room, roomID, pl uint32, msg []byte) bool {
	// Stateless checks and the tag first, without the room's lock.
	type ok struct{ at, n int }
	var goodArr [16]ok
	good := goodArr[:0]
	for at := 0; at < len(msg); {
		if len(msg)-at < wire.HeaderBytes {
			s.rejected[rMalformed].Add(1)
			return true
		}
		f := msg[at:]
		if f[0] != wire.Magic0 || f[1] != wire.Magic1 || f[2] != wire.Version || f[3]&^1 != 0 {
			s.rejected[rMalformed].Add(1)
			return true
		}
		plen := int(binary.LittleEndian.Uint16(f[22:]))
		n := wire.HeaderBytes + plen + wire.TagBytes
		if len(f) < n {
			s.rejected[rMalformed].Add(1)
			return true
		}
		at += n
		switch {
		case plen > 1024:
			s.rejected[rOversize].Add(1)
			continue
		case binary.LittleEndian.Uint32(f[12:]) == 0 || f[3] != 0: // seq 0; HMAC frames in a SHA-256 room
			s.rejected[rMalformed].Add(1)
			continue
		case binary.LittleEndian.Uint32(f[8:]) != pl:
			s.rejected[rWrongSender].Add(1)
			continue
		case binary.LittleEndian.Uint32(f[4:]) != roomID:
			s.rejected[rNotMember].Add(1)
			continue
		}
		sum := sha256.Sum256(f[:wire.HeaderBytes+plen])
		if subtle.ConstantTimeCompare(sum[:], f[wire.HeaderBytes+plen:n]) != 1 {
			s.rejected[rBadTag].Add(1)
			continue
		}
		good = append(good, ok{at - n, n})
	}
	if len(good) == 0 {
		return false
	}
	rm.mu.Lock()
	p := rm.members[pl]
	if p == nil {
		rm.mu.Unlock()
		s.rejected[rNotMember].Add(int64(len(good)))
		return false
	}
	for _, g := range good {
		f := msg[g.at : g.at+g.n]
		if !p.accept(binary.LittleEndian.Uint32(f[12:])) {
			s.rejected[rReplay].Add(1)
			continue
		}
		rm.inbox = append(rm.inbox, f...)
	}
	wasDirty := rm.dirty
	rm.dirty = true
	rm.mu.Unlock()
	if !wasDirty {
		s.dirtyMu.Lock()
		s.dirty = append(s.dirty, rm)
		s.dirtyMu.Unlock()
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
	return false
}

// accept applies the 128-wide replay window (docs/architecture.md, Validation step 3).
func (p *player) accept(seq uint32) bool {
	if seq > p.top {
		shift := seq - p.top
		switch {
		case shift >= windowBits:
			p.bits = [2]uint64{1, 0}
		case shift >= 64:
			p.bits = [2]uint64{1, p.bits[0] << (shift - 64)}
		default:
			p.bits[1] = p.bits[1]<<shift | p.bits[0]>>(64-shift)
			p.bits[0] = p.bits[0]<<shift | 1
		}
		p.top = seq
		return true
	}
	age := p.top - seq
	if age >= windowBits {
		return false
	}
	w, m := age/64, uint64(1)<<(age%64)
	if p.bits[w]&m != 0 {
		return false
	}
	p.bits[w] |= m
	return true
}

func (s *server) consume() {
	var rooms []*room
	for range s.wake {
		s.dirtyMu.Lock()
		rooms, s.dirty = s.dirty, rooms[:0]
		s.dirtyMu.Unlock()
		for _, rm := range rooms {
			rm.mu.Lock()
			batch := rm.inbox
			rm.inbox, rm.spare = rm.spare[:0], nil
			rm.dirty = false
			rm.mu.Unlock()
			now := wire.Nanotime()
			var rec, meas uint64
			s.statsMu.Lock()
			for at := 0; at+wire.FrameBytes <= len(batch); {
				n := wire.HeaderBytes + int(binary.LittleEndian.Uint16(batch[at+22:])) + wire.TagBytes
				if batch[at+wire.MeasuredAt] == 1 {
					s.hist.Record(now - int64(binary.LittleEndian.Uint64(batch[at+wire.StampAt:])))
					meas++
				}
				rec++
				at += n
			}
			s.received += rec
			s.measured += meas
			s.statsMu.Unlock()
			rm.mu.Lock()
			if rm.spare == nil {
				rm.spare = batch[:0]
			}
			rm.mu.Unlock()
		}
	}
}
