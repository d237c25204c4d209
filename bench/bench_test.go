package bench

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestQuantileNearestRank(t *testing.T) {
	xs := []float64{5, 1, 4, 2, 3}
	for _, c := range []struct{ q, want float64 }{{0.5, 3}, {0.99, 5}, {0.2, 1}, {0.21, 2}} {
		if got := quantile(xs, c.q); got != c.want {
			t.Errorf("quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	if xs[0] != 5 {
		t.Errorf("quantile sorted its input: %v", xs)
	}
}

// Bad specs and options are refused with what was wrong, before any work.
func TestRefusals(t *testing.T) {
	for spec, want := range map[Spec]string{
		{Scenario: "nope", Concurrency: 1, Signatures: 1}:              `unknown scenario "nope"`,
		{Scenario: ScenarioOnline, Concurrency: 1, Signatures: 1}:      "needs presignatures",
		{Scenario: ScenarioFloor, Concurrency: 0, Signatures: 1}:       "concurrency 0",
		{Scenario: ScenarioRESTPresign, Concurrency: 1, Signatures: 1}: "no runner yet",
	} {
		var out bytes.Buffer
		err := RunChild(context.Background(), spec, &out)
		if err == nil || !strings.Contains(err.Error(), want) || out.Len() != 0 {
			t.Errorf("%+v: %v (output %q), want an error with %q", spec, err, out.String(), want)
		}
	}
	for name, o := range map[string]Options{
		"scenario":    {Scenarios: []string{"SOAP"}, Child: []string{"x"}},
		"concurrency": {Concurrency: []int{0}, Child: []string{"x"}},
		"100":         {Signatures: 95, Concurrency: []int{8}, Child: []string{"x"}},
	} {
		o.Work = t.TempDir()
		if err := Run(context.Background(), o); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
