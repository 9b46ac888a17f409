// The store's writer: group commit and its isolation between writes.

package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func newTestStore(t *testing.T) *store {
	t.Helper()
	st, err := openStore(context.Background(), testDB(t, "store.db"), testStoreOptions(nil))
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	return st
}

// holdWriter blocks the writer until the returned func is called, so that
// the writes queued meanwhile are committed together as one batch.
func holdWriter(t *testing.T, st *store) (release func()) {
	t.Helper()
	onlyOneNode(t) // PostgreSQL's writers commit each write alone
	running, hold := make(chan struct{}), make(chan struct{})
	go st.write(context.Background(), func(context.Context, *sql.Tx) error {
		close(running)
		<-hold
		return nil
	})
	<-running
	return func() { close(hold) }
}

func insertNet(name string) func(context.Context, *sql.Tx) error {
	return func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO nets (name, key_hash, claimed_at) VALUES (?, ?, 0)`, name, []byte{0})
		return err
	}
}

func netExists(t *testing.T, st *store, name string) bool {
	t.Helper()
	var n int
	require.NoError(t, st.r.QueryRow(`SELECT count(*) FROM nets WHERE name = ?`, name).Scan(&n))
	return n == 1
}

// TestGroupCommit: writes queued together share one transaction, and a
// failing one is rolled back alone.
func TestGroupCommit(t *testing.T) {
	t.Parallel()
	st := newTestStore(t)
	release := holdWriter(t, st)
	commits := st.commits.Load()
	errFail := errors.New("this write fails")
	results := make(chan error, 3)
	queue := func(fn func(context.Context, *sql.Tx) error) {
		go func() { results <- st.write(context.Background(), fn) }()
	}
	queue(insertNet("a"))
	queue(func(ctx context.Context, tx *sql.Tx) error {
		if err := insertNet("half")(ctx, tx); err != nil {
			return err
		}
		return errFail // after writing: its row must go
	})
	queue(insertNet("b"))
	waitFor(t, 10*time.Second, func() bool { return len(st.ops) == 3 }, "three writes queued")
	release()
	var errs []error
	for i := 0; i < 3; i++ {
		errs = append(errs, <-results)
	}
	assert.ElementsMatch(t, []error{nil, nil, errFail}, errs)
	assert.True(t, netExists(t, st, "a"))
	assert.True(t, netExists(t, st, "b"))
	assert.False(t, netExists(t, st, "half"), "a failed write leaves nothing")
	assert.Equal(t, commits+2, st.commits.Load(), "the held write, then one commit for the three")
}

// TestWriteThen: the after funcs of a batch run once it has committed, in
// batch order, and not for a write that failed.
func TestWriteThen(t *testing.T) {
	t.Parallel()
	st := newTestStore(t)
	release := holdWriter(t, st)
	var ran []string // appended by the writer only; read after every write returned
	after := func(name string) func() {
		return func() {
			var n int
			_ = st.r.QueryRow(`SELECT count(*) FROM nets WHERE name = ?`, name).Scan(&n)
			ran = append(ran, fmt.Sprintf("%s committed=%t", name, n == 1))
		}
	}
	errFail := errors.New("this write fails")
	results := make(chan error, 3)
	for i, name := range []string{"first", "failing", "third"} {
		go func() {
			results <- st.writeThen(context.Background(), func(ctx context.Context, tx *sql.Tx) (func(), error) {
				if err := insertNet(name)(ctx, tx); err != nil {
					return nil, err
				}
				if name == "failing" {
					return after(name), errFail
				}
				return after(name), nil
			})
		}()
		waitFor(t, 10*time.Second, func() bool { return len(st.ops) == i+1 }, "the writes queued in order")
	}
	release()
	var errs []error
	for range 3 {
		errs = append(errs, <-results)
	}
	assert.ElementsMatch(t, []error{nil, nil, errFail}, errs)
	assert.Equal(t, []string{"first committed=true", "third committed=true"}, ran)
	assert.False(t, netExists(t, st, "failing"))
}

// TestWriteCallerGone: a caller that goes away while its write runs cannot
// roll back the writes that share its transaction (the driver interrupts a
// connection whose statement's context is cancelled).
func TestWriteCallerGone(t *testing.T) {
	t.Parallel()
	st := newTestStore(t)
	release := holdWriter(t, st)
	ctx, cancel := context.WithCancel(context.Background())
	results := make(chan error, 2)
	go func() {
		results <- st.write(ctx, func(wctx context.Context, tx *sql.Tx) error {
			cancel() // the caller hangs up mid-write
			return insertNet("gone")(wctx, tx)
		})
	}()
	go func() { results <- st.write(context.Background(), insertNet("stays")) }()
	waitFor(t, 10*time.Second, func() bool { return len(st.ops) == 2 }, "two writes queued")
	release()
	require.NoError(t, <-results)
	require.NoError(t, <-results)
	assert.True(t, netExists(t, st, "stays"))
	assert.True(t, netExists(t, st, "gone"))

	// A caller gone before its turn is skipped.
	release = holdWriter(t, st)
	ctx, cancel = context.WithCancel(context.Background())
	go func() { results <- st.write(ctx, insertNet("skipped")) }()
	waitFor(t, 10*time.Second, func() bool { return len(st.ops) == 1 }, "one write queued")
	cancel()
	release()
	assert.ErrorIs(t, <-results, context.Canceled)
	assert.False(t, netExists(t, st, "skipped"))
}

// TestTokenCacheBounded: past its bound the token cache stops growing, and
// tokens beyond it still work, read from the store.
func TestTokenCacheBounded(t *testing.T) {
	t.Parallel()
	onlyOneNode(t)
	st := newTestStore(t)
	st.maxToks = 2
	ctx := context.Background()
	var secrets []string
	for i := 0; i < 5; i++ {
		secret, _, err := st.createToken(ctx, "demo", "")
		require.NoError(t, err)
		secrets = append(secrets, secret)
	}
	for _, secret := range secrets {
		tok, err := st.lookupToken(ctx, secret)
		require.NoError(t, err)
		assert.Equal(t, "demo", tok.Net)
	}
	n := 0
	st.tokens.Range(func(any, any) bool { n++; return true })
	assert.Equal(t, 2, n)
	assert.Equal(t, int64(2), st.nTokens.Load())
}

// TestCheckpointer: the WAL is copied into the database file in the
// background (the writer never checkpoints itself).
func TestCheckpointer(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "store.db")
	st, err := openStore(context.Background(), path, testStoreOptions(nil, func(o *storeOptions) { o.CheckpointEvery = 10 * time.Millisecond }))
	require.NoError(t, err)
	defer st.Close()
	size := func() int64 {
		fi, err := os.Stat(path)
		require.NoError(t, err)
		return fi.Size()
	}
	before := size()
	_, tok, err := st.createToken(context.Background(), "demo", "")
	require.NoError(t, err)
	for i := 0; i < 200; i++ { // a few hundred pages into the WAL
		_, err := st.pushRequest(context.Background(), tok, []byte(`{"simEndpoint":"/`+strings.Repeat("x", 500)+`"}`), "")
		require.NoError(t, err)
	}
	// The counter moves after the checkpoint returns, so wait for both.
	waitFor(t, 10*time.Second, func() bool { return size() > before && st.checkpoints.Load() > 0 },
		"the database file to take in the WAL")
}

// TestReplyAfterCommit: pushreq, pushres and the peer messages answer only
// once their write is committed. The writer is held, so a reply that came now would be for a
// write that is not on disk.
func TestReplyAfterCommit(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	tok, peerID := r.login("demo")
	r.pullReqs("demo", testKey, nil) // claim
	rid := r.push(tok, map[string]any{"simEndpoint": "/first"})
	require.Len(t, r.pullReqs("demo", testKey, nil), 1)

	for name, call := range map[string]func() reply{
		"pushreq": func() reply {
			return r.postJSON("/api/v1/client/pushreq", tok, map[string]any{"simEndpoint": "/held"})
		},
		"pushres": func() reply { return r.answer("demo", testKey, rid, map[string]any{"simBody": "held"}) },
		"peer send": func() reply {
			return r.postJSON("/api/v1/peer/send", tok, map[string]any{"to": peerID, "data": "held"})
		},
		"peer publish": func() reply {
			return r.postJSON("/api/v1/peer/publish", tok, map[string]any{"topic": "t", "data": "held"})
		},
		"peer broadcast": func() reply {
			return r.postJSON("/api/v1/peer/broadcast", tok, map[string]any{"data": "held"})
		},
	} {
		t.Run(name, func(t *testing.T) {
			release := holdWriter(t, r.store)
			replies := async(call)
			waitFor(t, 10*time.Second, func() bool { return len(r.store.ops) == 1 }, "the write queued")
			early := time.NewTimer(50 * time.Millisecond) // a reply now would be premature
			select {
			case rep := <-replies:
				release()
				t.Fatalf("replied %d before the write was committed", rep.Status)
			case <-early.C:
			}
			release()
			rep := within(t, 10*time.Second, replies, name)
			assert.Less(t, rep.Status, 300, string(rep.Body))
		})
	}
}

// TestMigrateFromV1: a store made by schema version 1 opens at the newest
// version with its logins and requests intact and counted (net_usage); its logins take part in peer
// messaging at once.
func TestMigrateFromV1(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "v1.db")
	db, err := sql.Open("sqlite", path)
	require.NoError(t, err)
	_, err = db.Exec(schemaV1 + `; PRAGMA user_version = 1`)
	require.NoError(t, err)
	const secret = "an-old-token"
	future := time.Now().Add(time.Hour).UnixMilli()
	_, err = db.Exec(`INSERT INTO tokens (token_hash, peer_id, net, created_at, expires_at) VALUES (?, 'old-peer', 'demo', 0, ?)`,
		secretHash(secret), future)
	require.NoError(t, err)
	_, err = db.Exec(`INSERT INTO requests (rid, net, token_hash, from_peer, status, sim_req, created_at, expires_at)
		VALUES ('old-rid', 'demo', ?, 'old-peer', 'queued', '{}', 0, ?)`, secretHash(secret), future)
	require.NoError(t, err)
	require.NoError(t, db.Close())

	// inspect reads it as it is, without migrating it; purge and net
	// refuse it: only serve upgrades a store, so an older relay serving it
	// keeps a schema it can read.
	out, err := runCLI(t, nil, "inspect", "--db", path, "--json")
	require.NoError(t, err)
	assert.Contains(t, out, `"messages": 0`)
	for _, args := range [][]string{{"purge", "--dry-run"}, {"purge"}, {"net", "release", "demo"}} {
		_, err = runCLI(t, nil, append(args, "--db", path)...)
		require.Error(t, err, args)
		assert.Contains(t, err.Error(), "start this version's c2cvia serve once to upgrade it", args)
	}
	db, err = sql.Open("sqlite", path)
	require.NoError(t, err)
	var version int
	require.NoError(t, db.QueryRow(`PRAGMA user_version`).Scan(&version))
	require.NoError(t, db.Close())
	assert.Equal(t, 1, version, "inspect changed nothing")
	ctx := context.Background()
	st, err := openStore(ctx, path, testStoreOptions(nil))
	require.NoError(t, err)
	defer st.Close()
	require.NoError(t, st.r.QueryRow(`PRAGMA user_version`).Scan(&version))
	assert.Equal(t, len(migrations), version)
	var usage int64
	require.NoError(t, st.r.QueryRow(`SELECT bytes FROM net_usage WHERE net = 'demo'`).Scan(&usage))
	assert.Equal(t, int64(len("{}")), usage, "step 3 counts the payload already stored")
	old, err := st.lookupToken(ctx, secret)
	require.NoError(t, err)
	assert.Zero(t, old.MsgFloor)
	req, err := st.requestForOwner(ctx, old, "old-rid")
	require.NoError(t, err)
	assert.Equal(t, statusQueued, req.status)

	_, fresh, err := st.createToken(ctx, "demo", "")
	require.NoError(t, err)
	id, receivers, err := st.sendMessage(ctx, fresh, message{Kind: kindBroadcast}, []byte(`"hello"`), "")
	require.NoError(t, err)
	assert.Equal(t, 1, receivers, "the old login")
	msgs, _, err := st.readMessages(ctx, old, 0, 10)
	require.NoError(t, err)
	require.Len(t, msgs, 1)
	assert.Equal(t, id, msgs[0].ID)
}

// TestWriteLaterSharesTheNextCommit: a write nobody waits for (the pulled
// mark) is committed with the next write, not in a commit of its own.
func TestWriteLaterSharesTheNextCommit(t *testing.T) {
	t.Parallel()
	st, err := openStore(context.Background(), filepath.Join(t.TempDir(), "store.db"), testStoreOptions(nil, func(o *storeOptions) { o.LaterWait = time.Hour }))
	require.NoError(t, err)
	defer st.Close()
	_, tok, err := st.createToken(context.Background(), "later", "")
	require.NoError(t, err)
	commits, writes := st.commits.Load(), st.writes.Load()

	marked := make(chan struct{})
	st.writeLater(func(context.Context, *sql.Tx) error { close(marked); return nil })
	select {
	case <-marked:
		t.Fatal("a lone fire-and-forget write was committed at once")
	case <-time.After(50 * time.Millisecond):
	}
	rid, err := st.pushRequest(context.Background(), tok, benchSimReq, "")
	require.NoError(t, err)
	<-marked
	assert.Equal(t, commits+1, st.commits.Load(), "one commit for both")
	assert.Equal(t, writes+2, st.writes.Load())
	got, err := st.requestForOwner(context.Background(), tok, rid)
	require.NoError(t, err)
	assert.Equal(t, statusQueued, got.status)
}

// TestWriteLaterAlone: with no write coming, a fire-and-forget write is
// committed after LaterWait, and at Close at the latest.
func TestWriteLaterAlone(t *testing.T) {
	t.Parallel()
	st, err := openStore(context.Background(), filepath.Join(t.TempDir(), "store.db"), testStoreOptions(nil, func(o *storeOptions) { o.LaterWait = 10 * time.Millisecond }))
	require.NoError(t, err)
	defer st.Close()
	commits := st.commits.Load()
	marked := make(chan struct{})
	st.writeLater(func(context.Context, *sql.Tx) error { close(marked); return nil })
	select {
	case <-marked:
	case <-time.After(10 * time.Second):
		t.Fatal("a lone fire-and-forget write was never committed")
	}
	waitFor(t, 10*time.Second, func() bool { return st.commits.Load() == commits+1 }, "its commit")

	path := filepath.Join(t.TempDir(), "close.db")
	st2, err := openStore(context.Background(), path, testStoreOptions(nil, func(o *storeOptions) { o.LaterWait = time.Hour }))
	require.NoError(t, err)
	_, tok, err := st2.createToken(context.Background(), "later", "")
	require.NoError(t, err)
	st2.writeLater(func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE tokens SET net = 'closed' WHERE token_hash = ?`, tok.Hash)
		return err
	})
	require.NoError(t, st2.Close())
	ro, err := openStoreReadOnly(context.Background(), path, storeOptions{})
	require.NoError(t, err)
	defer ro.Close()
	var net string
	require.NoError(t, ro.r.QueryRow(`SELECT net FROM tokens`).Scan(&net))
	assert.Equal(t, "closed", net, "Close commits the write that was waiting")
}

// TestCheckpointerBoundsWAL: with readers and writers never pausing, a
// passive checkpoint can never start the WAL over, and it grew without end
// (a gigabyte in 20 s of load). Past WALLimit frames the checkpointer
// empties it, so it stays about a tick's worth of writes.
func TestCheckpointerBoundsWAL(t *testing.T) {
	// Not in parallel: the checkpointer's 20 ms tick wants the CPU.
	path := filepath.Join(t.TempDir(), "wal.db")
	st, err := openStore(context.Background(), path, testStoreOptions(nil, func(o *storeOptions) { o.CheckpointEvery = 20 * time.Millisecond; o.WALLimit = 50 }))
	require.NoError(t, err)
	defer st.Close()
	_, tok, err := st.createToken(context.Background(), "wal", "")
	require.NoError(t, err)

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 2 { // readers, always inside a read
		wg.Go(func() {
			for ctx.Err() == nil {
				var n int
				_ = st.r.QueryRowContext(ctx, `SELECT count(*) FROM requests`).Scan(&n)
			}
		})
	}
	body := []byte(`{"simEndpoint":"/` + strings.Repeat("w", 4000) + `"}`)
	// Every 150 inserts a writer waits for the checkpointer's next run, as
	// a relay's writes meet its 1 s tick: what is measured is what the
	// checkpointer does when it runs, not whether a loaded machine lets it
	// run. Without its TRUNCATE the WAL still grows to 44 MB.
	nextCheckpoint := func() {
		since := st.checkpoints.Load()
		for st.checkpoints.Load() == since && ctx.Err() == nil {
			select {
			case <-ctx.Done():
			case <-time.After(time.Millisecond):
			}
		}
	}
	var inserted atomic.Int64
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				n := inserted.Add(1)
				if n > 1500 {
					return
				}
				if n%150 == 0 {
					nextCheckpoint()
				}
				if _, err := st.pushRequest(ctx, tok, body, ""); err != nil && ctx.Err() == nil {
					t.Error(err)
					return
				}
			}
		})
	}
	walSize := func() int64 {
		fi, err := os.Stat(path + "-wal")
		if err != nil {
			return 0
		}
		return fi.Size()
	}
	var largest int64
	waitFor(t, 60*time.Second, func() bool {
		largest = max(largest, walSize())
		return inserted.Load() >= 1500
	}, "1,500 inserts")
	stop()
	wg.Wait()
	// 1,500 requests of 4 KB wrote well over 6 MB of WAL frames.
	assert.Positive(t, st.walResets.Load(), "the WAL was emptied")
	assert.Less(t, largest, int64(10<<20), "the WAL stays bounded (it reached 44 MB unbounded)")
}
