// wsload: the WebSocket load generator of bench/ingress.ts.
//
// It opens -conns WebSocket connections to -url (connection i presents line i of -tickets
// as ?ticket=, and speaks for room i/-room-size, player -first+i), spread over the source
// addresses 127.0.0.2 .. 127.0.0.(1+-sources) (bound before connect, port chosen at
// connect: IP_BIND_ADDRESS_NO_PORT), in bursts of at most -burst concurrent handshakes.
// Then it obeys commands, one a line, on stdin, and answers one JSON line on stdout each:
//
//	run <msgs/s> <warm ms> <window ms> <drain ms>   open-loop load (below)
//	ping                                           one message on every connection
//	close                                          close every connection and exit
//
// The load is open loop on 1 ms ticks: connection c sends its k-th message at the tick
// ceil(phase_c + k·period), period = conns / rate, whatever the server does; the message
// is stamped with that planned tick's time (CLOCK_MONOTONIC), never with the time it was
// actually written, so a late writer, a full socket buffer or a slow server all show in
// the latency the server measures (no coordinated omission). Each message holds -frames
// v1 frames (120 bytes, 64-byte payload, SHA-256 tag) with consecutive seqs. Moves
// planned inside the window carry a flag, so the server counts and measures only those;
// the generator reports how many it planned and sent in the window, and how late its own
// writes were against the plan (its lag: on a shared machine it competes for the cores).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"move-dispatcher/bench/wsload/internal/wire"
)

type conn struct {
	ws     *websocket.Conn
	room   uint32
	player uint32
	seq    uint32
	// next planned send (ns) and its index
	next  int64
	k     int64
	phase int64
	buf   []byte
	dead  atomic.Bool
}

var out = json.NewEncoder(os.Stdout)
var outMu sync.Mutex

func emit(v any) {
	outMu.Lock()
	defer outMu.Unlock()
	_ = out.Encode(v)
}

func main() {
	url := flag.String("url", "", "ws://host:port/")
	tickets := flag.String("tickets", "", "file: one ticket a line (connection i uses line i)")
	n := flag.Int("conns", 1000, "connections")
	first := flag.Int("first", 0, "player id of the first connection (ids are global)")
	roomSize := flag.Int("room-size", 10, "players a room (room = player / room-size)")
	sources := flag.Int("sources", 16, "source addresses 127.0.0.2 ..")
	burst := flag.Int("burst", 2000, "concurrent handshakes at most")
	frames := flag.Int("frames", 1, "v1 frames a message")
	timeout := flag.Duration("timeout", 10*time.Second, "handshake timeout")
	groups := flag.Int("groups", 2*runtime.GOMAXPROCS(0), "sender goroutines")
	flag.Parse()

	var lines []string
	if *tickets != "" {
		b, err := os.ReadFile(*tickets)
		if err != nil {
			fail(err)
		}
		lines = strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) < *n {
			fail(fmt.Errorf("%d tickets for %d connections", len(lines), *n))
		}
	}

	// --- connect ---
	conns := make([]*conn, *n)
	var held, refused503, refusedOther, failed atomic.Int64
	var worstRefusalNs atomic.Int64
	statuses := sync.Map{}
	t0 := time.Now()
	for lo := 0; lo < *n; lo += *burst {
		hi := min(lo+*burst, *n)
		var wg sync.WaitGroup
		for i := lo; i < hi; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				player := uint32(*first + i)
				src := net.IPv4(127, 0, 0, byte(2+i%*sources))
				d := websocket.Dialer{
					HandshakeTimeout: *timeout,
					ReadBufferSize:   512,
					WriteBufferSize:  *frames*wire.FrameBytes + 64,
					NetDialContext: (&net.Dialer{
						LocalAddr: &net.TCPAddr{IP: src},
						Timeout:   *timeout,
						Control: func(_, _ string, c syscall.RawConn) error {
							var serr error
							err := c.Control(func(fd uintptr) {
								// IP_BIND_ADDRESS_NO_PORT (24): the port is picked at connect, per 4-tuple.
								serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, 24, 1)
							})
							if err != nil {
								return err
							}
							return serr
						},
					}).DialContext,
				}
				u := *url
				if lines != nil {
					u += "?ticket=" + strings.TrimSpace(lines[i])
				} else {
					u += fmt.Sprintf("?room=%d&player=%d", player/uint32(*roomSize), player)
				}
				start := time.Now()
				ws, resp, err := d.Dial(u, nil)
				if err != nil {
					took := time.Since(start).Nanoseconds()
					if resp != nil {
						key := strconv.Itoa(resp.StatusCode)
						v, _ := statuses.LoadOrStore(key, new(atomic.Int64))
						v.(*atomic.Int64).Add(1)
						if resp.StatusCode == http.StatusServiceUnavailable {
							refused503.Add(1)
						} else {
							refusedOther.Add(1)
						}
						for {
							w := worstRefusalNs.Load()
							if took <= w || worstRefusalNs.CompareAndSwap(w, took) {
								break
							}
						}
					} else {
						key := errKind(err)
						v, _ := statuses.LoadOrStore(key, new(atomic.Int64))
						v.(*atomic.Int64).Add(1)
						failed.Add(1)
					}
					return
				}
				held.Add(1)
				c := &conn{ws: ws, room: player / uint32(*roomSize), player: player, buf: make([]byte, *frames*wire.FrameBytes)}
				conns[i] = c
				go func() {
					// Reads (and answers pings) until the connection ends.
					for {
						if _, _, err := ws.NextReader(); err != nil {
							c.dead.Store(true)
							return
						}
					}
				}()
			}(i)
		}
		wg.Wait()
	}
	live := make([]*conn, 0, *n)
	for _, c := range conns {
		if c != nil {
			live = append(live, c)
		}
	}
	byStatus := map[string]int64{}
	statuses.Range(func(k, v any) bool { byStatus[k.(string)] = v.(*atomic.Int64).Load(); return true })
	emit(map[string]any{
		"type": "connected", "attempted": *n, "held": held.Load(), "refused503": refused503.Load(),
		"refusedOther": refusedOther.Load(), "failed": failed.Load(), "byStatus": byStatus,
		"worstRefusalMs": float64(worstRefusalNs.Load()) / 1e6, "ms": time.Since(t0).Milliseconds(),
	})

	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "run":
			if len(f) != 5 {
				fail(fmt.Errorf("run <rate> <warm ms> <window ms> <drain ms>"))
			}
			num := func(s string) float64 {
				v, err := strconv.ParseFloat(s, 64)
				if err != nil {
					fail(err)
				}
				return v
			}
			emit(runLoad(live, *frames, *groups, num(f[1]), int64(num(f[2]))*1e6, int64(num(f[3]))*1e6, int64(num(f[4]))*1e6))
		case "ping":
			sent := 0
			for _, c := range live {
				if c.dead.Load() {
					continue
				}
				now := wire.Nanotime()
				for j := 0; j < *frames; j++ {
					c.seq++
					wire.Encode(c.buf[j*wire.FrameBytes:], c.room, c.player, c.seq, 0, now, false)
				}
				if c.ws.WriteMessage(websocket.BinaryMessage, c.buf) == nil {
					sent++
				}
			}
			emit(map[string]any{"type": "pinged", "sent": sent})
		case "close":
			alive := 0
			for _, c := range live {
				if !c.dead.Load() {
					alive++
				}
			}
			for _, c := range live {
				_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second))
				_ = c.ws.Close()
			}
			emit(map[string]any{"type": "closed", "aliveBeforeClose": alive})
			return
		default:
			fail(fmt.Errorf("unknown command %q", f[0]))
		}
	}
}

func errKind(err error) string {
	var op *net.OpError
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "ECONNREFUSED"
	case errors.Is(err, syscall.ECONNRESET):
		return "ECONNRESET"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "EADDRNOTAVAIL"
	case errors.Is(err, syscall.EMFILE):
		return "EMFILE (generator)"
	case errors.As(err, &op):
		return "net:" + op.Op
	case errors.Is(err, websocket.ErrBadHandshake):
		return "bad handshake"
	}
	s := err.Error()
	if len(s) > 60 {
		s = s[:60]
	}
	return s
}

type result struct {
	Type            string  `json:"type"`
	Rate            float64 `json:"rate"`
	Conns           int     `json:"conns"`
	Frames          int     `json:"frames"`
	WindowMs        float64 `json:"windowMs"`
	PlannedMessages int64   `json:"plannedMessages"`
	SentMessages    int64   `json:"sentMessages"`
	SentMoves       int64   `json:"sentMoves"`
	SentTotal       int64   `json:"sentTotalMessages"`
	WriteErrors     int64   `json:"writeErrors"`
	DeadConns       int     `json:"deadConns"`
	LagP50Us        float64 `json:"lagP50Us"`
	LagP99Us        float64 `json:"lagP99Us"`
	LagMaxUs        float64 `json:"lagMaxUs"`
}

// runLoad sends the open-loop load for warm + window (planned times), waits drain, and
// reports. Windows' boundaries are announced as they pass ({"type":"window-start"} and
// {"type":"window-end"}), for the driver to read the server's CPU counters then.
func runLoad(live []*conn, frames, groups int, rate float64, warm, window, drain int64) result {
	const tick = int64(time.Millisecond)
	n := len(live)
	period := float64(n) / rate * 1e9 // ns between two messages of one connection
	start := (wire.Nanotime()/tick + 20) * tick
	wStart := start + warm
	wEnd := wStart + window
	// Phases spread evenly over one period, interleaved across groups.
	for i, c := range live {
		c.phase = int64(float64(i) / float64(n) * period)
		c.k = 0
		c.next = plannedAt(start, c.phase, 0, period, tick)
	}
	var planned, sent, sentTotal, writeErrs atomic.Int64
	lags := make([][]int64, groups)
	var wg sync.WaitGroup
	for g := 0; g < groups; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			var mine []*conn
			for i := g; i < n; i += groups {
				mine = append(mine, live[i])
			}
			lag := make([]int64, 0, 1<<16)
			var p, s, st, we int64
			for t := start; t < wEnd; t += tick {
				now := wire.Nanotime()
				if now < t {
					time.Sleep(time.Duration(t - now))
				} else if now-t > tick {
					// Behind: catch up to the current tick (every due message is still sent,
					// stamped with its own planned time).
					t = now / tick * tick
				}
				for _, c := range mine {
					for c.next <= t && c.next < wEnd {
						measured := c.next >= wStart
						if measured {
							p++
						}
						if c.dead.Load() {
							c.k++
							c.next = plannedAt(start, c.phase, c.k, period, tick)
							continue
						}
						for j := 0; j < frames; j++ {
							c.seq++
							wire.Encode(c.buf[j*wire.FrameBytes:], c.room, c.player, c.seq, uint32(c.k), c.next, measured)
						}
						if err := c.ws.WriteMessage(websocket.BinaryMessage, c.buf); err != nil {
							we++
							c.dead.Store(true)
						} else {
							st++
							if measured {
								s++
								if len(lag) < cap(lag) {
									lag = append(lag, wire.Nanotime()-c.next)
								}
							}
						}
						c.k++
						c.next = plannedAt(start, c.phase, c.k, period, tick)
					}
				}
			}
			planned.Add(p)
			sent.Add(s)
			sentTotal.Add(st)
			writeErrs.Add(we)
			lags[g] = lag
		}(g)
	}
	announce := func(at int64, what string) {
		if d := at - wire.Nanotime(); d > 0 {
			time.Sleep(time.Duration(d))
		}
		emit(map[string]any{"type": what})
	}
	announce(wStart, "window-start")
	announce(wEnd, "window-end")
	wg.Wait()
	time.Sleep(time.Duration(drain))
	var all []int64
	for _, l := range lags {
		all = append(all, l...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	q := func(p float64) float64 {
		if len(all) == 0 {
			return math.NaN()
		}
		return float64(all[min(len(all)-1, int(p*float64(len(all))))]) / 1e3
	}
	dead := 0
	for _, c := range live {
		if c.dead.Load() {
			dead++
		}
	}
	r := result{
		Type: "result", Rate: rate, Conns: n, Frames: frames, WindowMs: float64(window) / 1e6,
		PlannedMessages: planned.Load(), SentMessages: sent.Load(), SentMoves: sent.Load() * int64(frames),
		SentTotal: sentTotal.Load(), WriteErrors: writeErrs.Load(), DeadConns: dead,
		LagP50Us: q(0.5), LagP99Us: q(0.99), LagMaxUs: 0,
	}
	if len(all) > 0 {
		r.LagMaxUs = float64(all[len(all)-1]) / 1e3
	} else {
		r.LagP50Us, r.LagP99Us = 0, 0
	}
	return r
}

// plannedAt: the tick at or after start + phase + k·period.
func plannedAt(start, phase, k int64, period float64, tick int64) int64 {
	t := phase + int64(float64(k)*period)
	return start + (t+tick-1)/tick*tick
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "wsload:", err)
	os.Exit(2)
}
