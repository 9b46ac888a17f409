// Peer cursors after the store is restored from a backup: a reader whose
// cursor is past the restored messages is told to start over, by pullsmart
// and by the event stream, and the Go client does so by itself.

package main

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/c2cvia/c2cvia/client"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestPeerCursorAfterRestore: back up a serving store online (VACUUM
// INTO), send more, stop, restore the backup, start again. The restarted
// relay's message ids start past a gap (msgIDGap), so a reader's cursor
// from the lost messages is behind every new one: it reads the new
// messages and misses none, on pullsmart and on a stream resuming with
// Last-Event-ID. A cursor past the newest id the store has given is 409
// cursor_ahead; read without a cursor, every kept message comes again.
func TestPeerCursorAfterRestore(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	db, backup := filepath.Join(dir, "relay.db"), filepath.Join(dir, "backup.db")
	env := map[string]string{"C2CVIA_ADDR": "127.0.0.1:0"}
	base, stop := startRun(t, env, "serve", "--db", db)
	rel := &testRelay{t: t, URL: base}
	ada, _ := rel.login("restore")
	bob, _ := rel.login("restore")
	broadcast := func(data string) int64 {
		t.Helper()
		rep := rel.postJSON("/api/v1/peer/broadcast", ada, map[string]any{"data": data})
		require.Equal(t, http.StatusCreated, rep.Status, string(rep.Body))
		id, err := rep.JSON["id"].(json.Number).Int64()
		require.NoError(t, err, string(rep.Body))
		return id
	}
	for i := range 3 {
		broadcast(fmt.Sprint("before ", i))
	}
	online, err := sql.Open("sqlite", db)
	require.NoError(t, err)
	_, err = online.Exec(`VACUUM INTO ?`, backup)
	require.NoError(t, err)
	require.NoError(t, online.Close())
	for i := range 3 {
		broadcast(fmt.Sprint("after ", i))
	}
	rep := rel.postJSON("/api/v1/peer/pullsmart", bob, map[string]any{"wait": 0})
	require.Equal(t, http.StatusOK, rep.Status)
	cursor, err := rep.JSON["next"].(json.Number).Int64()
	require.NoError(t, err)
	require.NoError(t, stop())

	require.NoError(t, os.Rename(backup, db))
	base, _ = startRun(t, env, "serve", "--db", db)
	rel = &testRelay{t: t, URL: base}
	rep = rel.postJSON("/api/v1/peer/pullsmart", bob, map[string]any{"since": cursor, "wait": 0})
	require.Equal(t, http.StatusOK, rep.Status, "a cursor within the gap is not ahead: %s", rep.Body)
	assert.Empty(t, rep.JSON["messages"])

	first, second := broadcast("new 1"), broadcast("new 2")
	assert.Greater(t, first, cursor+msgIDGap-10, "the new ids start past the gap")
	rep = rel.postJSON("/api/v1/peer/pullsmart", bob, map[string]any{"since": cursor, "wait": 0})
	require.Equal(t, http.StatusOK, rep.Status)
	assert.Contains(t, string(rep.Body), `"new 1"`, "the reader misses no new message")
	assert.Contains(t, string(rep.Body), `"new 2"`)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream := func(lastEventID string) *http.Response {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v1/peer/stream?token="+bob, nil)
		require.NoError(t, err)
		if lastEventID != "" {
			req.Header.Set("Last-Event-ID", lastEventID)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	resp := stream(fmt.Sprint(cursor))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	sc := bufio.NewScanner(resp.Body)
	require.True(t, sc.Scan())
	assert.Equal(t, fmt.Sprint("id: ", first), sc.Text(), "the stream resumes with the new messages")

	// A cursor past every id this store gave: start over.
	rep = rel.postJSON("/api/v1/peer/pullsmart", bob, map[string]any{"since": second + 1, "wait": 0})
	assert.Equal(t, http.StatusConflict, rep.Status, string(rep.Body))
	assert.Equal(t, "cursor_ahead", rep.errorCode())
	resp = stream(fmt.Sprint(second + 1))
	assert.Equal(t, http.StatusConflict, resp.StatusCode, "the stream")

	rep = rel.postJSON("/api/v1/peer/pullsmart", bob, map[string]any{"wait": 0})
	require.Equal(t, http.StatusOK, rep.Status)
	assert.Len(t, rep.JSON["messages"], 5, "from the start: the 3 restored and the 2 new")
	resp = stream("")
	sc = bufio.NewScanner(resp.Body)
	require.True(t, sc.Scan())
	assert.Equal(t, "id: 1", sc.Text(), "the stream without a cursor starts at the oldest kept message")
}

// TestClientStartsOverOnCursorAhead: the Go client, given a cursor the
// relay's store is behind (as after a restore), starts over from the
// oldest kept message by itself.
func TestClientStartsOverOnCursorAhead(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	ctx := context.Background()
	ada := clientLogin(t, r.URL, "ahead")
	var errs []error
	bob, err := client.Login(ctx, r.URL, "ahead", client.WithErrorLog(func(err error) { errs = append(errs, err) }))
	require.NoError(t, err)
	first, err := ada.Send(ctx, bob.PeerID(), "one")
	require.NoError(t, err)
	_, err = ada.Send(ctx, bob.PeerID(), "two")
	require.NoError(t, err)
	var got []string
	for m, err := range bob.MessagesSince(ctx, first+1000) {
		require.NoError(t, err)
		got = append(got, string(m.Data))
		if len(got) == 2 {
			break
		}
	}
	assert.Equal(t, []string{`"one"`, `"two"`}, got)
	if assert.Len(t, errs, 1) {
		assert.Contains(t, errs[0].Error(), "cursor_ahead")
		assert.Contains(t, errs[0].Error(), "starting over")
	}
}
