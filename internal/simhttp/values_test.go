package simhttp

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestValuesJSON: simHeaders and simQueryParams written by hand encode as
// encoding/json would (without HTML escaping) and read back the same.
func TestValuesJSON(t *testing.T) {
	v := Values{
		"Quote":   {`say "hi" \ bye`},
		"Control": {"a\tb\nc\rd\x00e\x1f"},
		"Unicode": {"José <b>&</b> \u2028 😀"},
		"Many":    {"1", "", "three"},
		"Empty":   {""},
	}
	got, err := json.Marshal(v)
	require.NoError(t, err)
	var plain map[string]any
	require.NoError(t, json.Unmarshal(got, &plain), "valid JSON: %s", got)
	assert.Equal(t, "José <b>&</b> \u2028 😀", plain["Unicode"])
	var back Values
	require.NoError(t, json.Unmarshal(got, &back))
	assert.Equal(t, v, back)

	raw, err := Values{"Bad": {"caf\xe9"}}.MarshalJSON()
	require.NoError(t, err)
	assert.JSONEq(t, `{"Bad":"caf\ufffd"}`, string(raw), "invalid UTF-8 as encoding/json writes it")

	var scalars Values
	require.NoError(t, json.Unmarshal([]byte(`{"n":5,"b":true,"l":["x",2],"z":null,"e":"a\u00e9\"b"}`), &scalars))
	assert.Equal(t, Values{"n": {"5"}, "b": {"true"}, "l": {"x", "2"}, "e": {"aé\"b"}}, scalars)
}
