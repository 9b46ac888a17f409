package main

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/c2cvia/c2cvia/internal/bench"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCrashSoak: a short crash soak. The relay (this test binary, run as
// the relay) is SIGKILLed three times under load (a few seconds); every acknowledged
// request and message survives, and every gateway request acknowledged
// with 202 ends with its own answer at its Location.
func TestCrashSoak(t *testing.T) {
	t.Parallel()
	exe, err := os.Executable()
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var log strings.Builder
	rep, err := bench.RunCrashSoak(ctx, bench.SoakOptions{
		Exe: exe, Env: append(os.Environ(), "C2CVIA_TEST_AS_RELAY=1"),
		// 1 s between kills on average: a relay under the race detector takes
		// most of a second to start, and each life must see some answers.
		Kills: 3, Every: time.Second, Clients: 2, Log: &log,
	})
	require.NoError(t, err, log.String())
	assert.Equal(t, 3, rep.Kills)
	assert.Positive(t, rep.Requests, "requests were acknowledged")
	assert.Positive(t, rep.Messages, "messages were acknowledged")
	assert.Empty(t, rep.Lost)
	assert.Equal(t, rep.Requests, rep.Answered)
	assert.Equal(t, rep.Messages, rep.Delivered)
	assert.Positive(t, rep.ViaSyncOK, "synchronous gateway requests were answered")
	assert.Equal(t, rep.ViaSync, rep.ViaSyncOK+rep.ViaSyncCut+rep.ViaSyncUnavailable, "every synchronous call answered as sent, or not acknowledged")
	assert.Positive(t, rep.ViaAsync, "gateway requests were acknowledged with 202")
	assert.Equal(t, rep.ViaAsync, rep.ViaAsyncAnswered, "every 202 ends with its answer at its Location")
	assert.Positive(t, rep.ViaWait, "gateway requests asked to wait=1")
	assert.Positive(t, rep.AnswersPushres, "a SimServer worker answered with pushres")
	assert.Positive(t, rep.AnswersWithPoll, "a SimServer worker answered with its next poll")

	var out strings.Builder
	bench.PrintSoak(&out, rep)
	assert.True(t, strings.HasSuffix(out.String(), "lost: 0\n"), out.String())
	t.Log(out.String())
}
