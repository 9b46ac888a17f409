// Unit tests of the bench's arithmetic: percentiles and rates of a
// measurement.

package bench

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestLoadStatsPercentiles(t *testing.T) {
	var s loadStats
	for i := 1; i <= 200; i++ {
		s.lat = append(s.lat, time.Duration(i)*time.Millisecond)
	}
	s.window = 4 * time.Second
	assert.Equal(t, 100.0, s.pct(50))
	assert.Equal(t, 180.0, s.pct(90))
	assert.Equal(t, 198.0, s.pct(99))
	assert.Equal(t, 200.0, s.pct(100))
	assert.Equal(t, 1.0, s.pct(0))
	assert.Equal(t, 50.0, s.perSec())
	assert.Zero(t, loadStats{}.pct(50))
}
