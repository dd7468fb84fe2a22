package handlers

import (
	"bytes"
	"strings"
	"unicode/utf8"
)

// ellipsis marks output that was cut.
const ellipsis = "…"

// cappedBuffer keeps the first limit+1 bytes written to it, so that output of more than
// limit bytes is detected without being held. Writes never fail: a writer that failed would
// leave the producer blocked on a full pipe.
type cappedBuffer struct {
	limit int
	buf   bytes.Buffer
	// onOverflow, if set, is called once, when the output first exceeds limit.
	onOverflow func()
}

func (c *cappedBuffer) Write(p []byte) (int, error) {
	overflowed := c.overflowed()
	if room := c.limit + 1 - c.buf.Len(); room > 0 {
		c.buf.Write(p[:min(len(p), room)])
	}
	if !overflowed && c.overflowed() && c.onOverflow != nil {
		c.onOverflow()
	}
	return len(p), nil
}

// overflowed reports whether more than limit bytes were written.
func (c *cappedBuffer) overflowed() bool { return c.buf.Len() > c.limit }

func (c *cappedBuffer) String() string { return c.buf.String() }

// tailBuffer keeps the last max bytes written to it; none if max is not positive.
type tailBuffer struct {
	max int
	buf []byte
	cut bool // earlier bytes were dropped
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if t.max <= 0 {
		return n, nil
	}
	if len(p) > t.max {
		p = p[len(p)-t.max:]
		t.buf, t.cut = t.buf[:0], true
	}
	if over := len(t.buf) + len(p) - t.max; over > 0 {
		t.buf, t.cut = append(t.buf[:0], t.buf[over:]...), true
	}
	t.buf = append(t.buf, p...)
	return n, nil
}

// String returns the kept bytes without trailing white space, starting on a character
// boundary and with an ellipsis in front if earlier bytes were dropped.
func (t *tailBuffer) String() string {
	if t.max <= 0 {
		return ""
	}
	s := string(t.buf)
	if t.cut {
		start := 0
		for start < len(s) && !utf8.RuneStart(s[start]) {
			start++
		}
		s = ellipsis + s[start:]
	}
	return strings.TrimRightFunc(s, isSpace)
}

func isSpace(r rune) bool { return r == ' ' || r == '\t' || r == '\n' || r == '\r' }

// lastBytes returns the end of s in at most n bytes, starting on a character boundary and
// with an ellipsis in front if it was cut.
func lastBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	if n < len(ellipsis) {
		return ""
	}
	n -= len(ellipsis)
	start := len(s) - n
	for start < len(s) && !utf8.RuneStart(s[start]) {
		start++
	}
	return ellipsis + s[start:]
}

// withOutput appends output from the work to an error message, keeping the whole message
// within messageLimit by shortening the output from the front.
func withOutput(message, label, output string) string {
	if output == "" {
		return message
	}
	message += "; " + label + ": "
	return message + lastBytes(output, max(0, messageLimit-len(message)))
}
