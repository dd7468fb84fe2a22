package requestload

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/go-logr/logr"
	discoveryv1 "k8s.io/api/discovery/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Targets returns the URLs of the gateways' reports.
type Targets func(ctx context.Context) ([]string, error)

// EndpointSliceTargets finds the gateways from the EndpointSlices of their Service: every
// endpoint still serving (a gateway shutting down finishes its requests, and reports them),
// on the slice's port of that name.
func EndpointSliceTargets(r client.Reader, namespace, service, port string) Targets {
	return func(ctx context.Context) ([]string, error) {
		list := &discoveryv1.EndpointSliceList{}
		if err := r.List(ctx, list, client.InNamespace(namespace), client.MatchingLabels{discoveryv1.LabelServiceName: service}); err != nil {
			return nil, fmt.Errorf("listing the endpoints of service %s/%s: %w", namespace, service, err)
		}
		var urls []string
		seen := map[string]bool{}
		for i := range list.Items {
			s := &list.Items[i]
			num := portNumber(s.Ports, port)
			if num == 0 {
				continue
			}
			for _, e := range s.Endpoints {
				if len(e.Addresses) == 0 || !serving(e.Conditions) {
					continue
				}
				u := "http://" + net.JoinHostPort(e.Addresses[0], strconv.Itoa(int(num))) + Path
				if !seen[u] {
					seen[u] = true
					urls = append(urls, u)
				}
			}
		}
		return urls, nil
	}
}

func portNumber(ports []discoveryv1.EndpointPort, name string) int32 {
	for _, p := range ports {
		if p.Port != nil && p.Name != nil && *p.Name == name {
			return *p.Port
		}
	}
	return 0
}

// serving reads an endpoint's conditions as the EndpointSlice API defines them: a nil
// condition is unknown, taken as true.
func serving(c discoveryv1.EndpointConditions) bool {
	if c.Serving != nil {
		return *c.Serving
	}
	return c.Ready == nil || *c.Ready
}

// PollerOptions configure a Poller.
type PollerOptions struct {
	// Interval is how often every gateway is asked; default 1s. It bounds how late a
	// request to a hive at zero agents starts one.
	Interval time.Duration
	// Client asks the gateways; one with a timeout of Interval when nil.
	Client *http.Client
	Logger logr.Logger
}

// Poller asks every gateway for its report at a fixed interval and keeps the sum. A gateway
// that does not answer counts for nothing until it does: its requests end with it, and an
// agent being deleted finishes those it has within its shutdown grace.
type Poller struct {
	targets Targets
	changed func(keys []string)
	opts    PollerOptions

	mu    sync.RWMutex
	loads map[string]Load
}

// NewPoller returns a poller of the gateways targets finds; changed is called with the hives
// whose load changed after each poll.
func NewPoller(targets Targets, changed func(keys []string), o PollerOptions) *Poller {
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	if o.Client == nil {
		o.Client = &http.Client{Timeout: o.Interval}
	}
	if o.Logger.GetSink() == nil {
		o.Logger = logr.Discard()
	}
	return &Poller{targets: targets, changed: changed, opts: o, loads: map[string]Load{}}
}

// Load returns a hive's request load, as of the last poll.
func (p *Poller) Load(key string) Load {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.loads[key]
}

// NeedLeaderElection is true: only the leader reconciles hives.
func (p *Poller) NeedLeaderElection() bool { return true }

// Start polls until ctx ends.
func (p *Poller) Start(ctx context.Context) error {
	t := time.NewTicker(p.opts.Interval)
	defer t.Stop()
	for {
		p.Poll(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Poll asks every gateway once, replaces the sum, and reports the hives whose load changed.
func (p *Poller) Poll(ctx context.Context) {
	urls, err := p.targets(ctx)
	if err != nil {
		p.opts.Logger.Error(err, "finding the gateways; keeping the last request load")
		return
	}
	reports := make([]Report, len(urls))
	var wg sync.WaitGroup
	for i, u := range urls {
		wg.Go(func() {
			r, err := p.fetch(ctx, u)
			if err != nil {
				p.opts.Logger.V(2).Info("a gateway did not report its load; counting none of it", "url", u, "error", err.Error())
				return
			}
			reports[i] = r
		})
	}
	wg.Wait()
	cur := Sum(reports)
	p.mu.Lock()
	prev := p.loads
	p.loads = cur
	p.mu.Unlock()
	if keys := Changed(prev, cur); len(keys) > 0 && p.changed != nil {
		p.changed(keys)
	}
}

func (p *Poller) fetch(ctx context.Context, url string) (Report, error) {
	var r Report
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, http.NoBody)
	if err != nil {
		return r, fmt.Errorf("asking %s: %w", url, err)
	}
	resp, err := p.opts.Client.Do(req)
	if err != nil {
		return r, fmt.Errorf("asking %s: %w", url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return r, fmt.Errorf("asking %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&r); err != nil {
		return r, fmt.Errorf("reading the report of %s: %w", url, err)
	}
	return r, nil
}
