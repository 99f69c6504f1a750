package node

import (
	"github.com/prometheus/client_golang/prometheus"
)

// maxAgentSeries bounds the per-agent series a scrape returns: a node
// running more agents reports the first ones by DID (and says how many it
// left out), so one node cannot blow up a Prometheus server.
const maxAgentSeries = 1000

// agentCollector reports, at scrape time, a tick and a budget series per
// agent running here (labelled by DID).
type agentCollector struct {
	m                     *Mesh
	tick, budget, omitted *prometheus.Desc
}

func newAgentCollector(m *Mesh) *agentCollector {
	return &agentCollector{m: m,
		tick:    prometheus.NewDesc("igor_agent_tick", "Tick of the latest checkpoint of an agent running on this node.", []string{"agent"}, nil),
		budget:  prometheus.NewDesc("igor_agent_budget_microcents", "Budget left to an agent running on this node, at its latest checkpoint.", []string{"agent"}, nil),
		omitted: prometheus.NewDesc("igor_agent_series_omitted", "Agents running here left out of the per-agent series (over the limit of 1000).", nil, nil),
	}
}

func (c *agentCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.tick
	ch <- c.budget
	ch <- c.omitted
}

func (c *agentCollector) Collect(ch chan<- prometheus.Metric) {
	n, omitted := 0, 0
	for _, st := range c.m.Svc.Hosted() { // sorted by DID
		if !st.Running {
			continue
		}
		if n == maxAgentSeries {
			omitted++
			continue
		}
		n++
		ch <- prometheus.MustNewConstMetric(c.tick, prometheus.GaugeValue, float64(st.Tick), st.DID)
		ch <- prometheus.MustNewConstMetric(c.budget, prometheus.GaugeValue, float64(st.Budget), st.DID)
	}
	ch <- prometheus.MustNewConstMetric(c.omitted, prometheus.GaugeValue, float64(omitted))
}
