package dispatch

import (
	"sync"

	"k8s.io/apimachinery/pkg/types"
)

// Ledger counts the binds the dispatcher has made that its cache does not show yet.
//
// The cache is the dispatcher's only view of which tasks an agent holds, and it lags the API
// server. Without the ledger, a reconcile that runs before the cache shows the previous
// reconcile's binds would see those slots free and fill them again. With it, an agent's
// used slots are the union of the tasks the cache shows bound to it and the tasks the
// ledger holds for it, so a bind counts from the moment it is sent.
//
// Each entry remembers the task's resourceVersion from before its bind. The entry stays
// exactly as long as the cache still shows the task at that version; once the cache shows
// any later version (the bind, or whatever came after it) or the task's deletion, the cache
// accounts for the task and the entry goes. A failed bind releases its entry at once; a
// bind whose answer was lost and could not be checked is kept as doubtful until the API
// server tells whether it went through. No timer is involved, so a cache that stalls for
// any time cannot cause an over-bind. A Ledger is safe for concurrent use.
type Ledger struct {
	mu      sync.Mutex
	byTask  map[types.UID]ledgerEntry
	byAgent map[string]map[types.UID]struct{}
	byHive  map[string]map[types.UID]struct{}
}

type ledgerEntry struct {
	hive, agent     string
	resourceVersion string
	// doubtful names the task of a bind whose outcome is unknown.
	doubtful string
}

// NewLedger returns an empty ledger.
func NewLedger() *Ledger {
	return &Ledger{
		byTask:  map[types.UID]ledgerEntry{},
		byAgent: map[string]map[types.UID]struct{}{},
		byHive:  map[string]map[types.UID]struct{}{},
	}
}

// Reserve records a bind of a hive's task to an agent, before it is sent. resourceVersion
// is the task's version the bind is based on. Hive and agent names must be unique across
// namespaces (qualify them).
func (l *Ledger) Reserve(hive, agent string, task types.UID, resourceVersion string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.dropLocked(task)
	l.byTask[task] = ledgerEntry{hive: hive, agent: agent, resourceVersion: resourceVersion}
	add(l.byAgent, agent, task)
	add(l.byHive, hive, task)
}

// Drop forgets a bind, because it failed.
func (l *Ledger) Drop(task types.UID) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.dropLocked(task)
}

// Doubt marks the bind of a task (named name) as one whose outcome is unknown: its answer
// was lost and the API server could not be asked. The slot stays taken until Resolve.
func (l *Ledger) Doubt(task types.UID, name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.byTask[task]; ok {
		e.doubtful = name
		l.byTask[task] = e
	}
}

// IsDoubtful reports whether the bind of a task is doubtful.
func (l *Ledger) IsDoubtful(task types.UID) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.byTask[task].doubtful != ""
}

// DoubtfulBind is a bind whose outcome is unknown: Task (named Name) was at
// ResourceVersion before it.
type DoubtfulBind struct {
	Task            types.UID
	Name            string
	ResourceVersion string
}

// Doubtful returns a hive's doubtful binds.
func (l *Ledger) Doubtful(hive string) []DoubtfulBind {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []DoubtfulBind
	for uid := range l.byHive[hive] {
		if e := l.byTask[uid]; e.doubtful != "" {
			out = append(out, DoubtfulBind{Task: uid, Name: e.doubtful, ResourceVersion: e.resourceVersion})
		}
	}
	return out
}

// Resolve settles a doubtful bind once the API server showed the task: at a later version
// than before the bind, it may have gone through and the entry stays until the cache shows
// it; at the same version, it did not, and the entry goes.
func (l *Ledger) Resolve(task types.UID, resourceVersion string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.byTask[task]
	if !ok || e.doubtful == "" {
		return
	}
	if resourceVersion == e.resourceVersion {
		l.dropLocked(task)
		return
	}
	e.doubtful = ""
	l.byTask[task] = e
}

// Holds reports whether a bind of the task is in flight or not yet in the cache.
func (l *Ledger) Holds(task types.UID) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.byTask[task]
	return ok
}

// CachedVersion returns the resourceVersion of a task in the cache, and false if the cache
// does not hold the task.
type CachedVersion func(task types.UID) (resourceVersion string, found bool)

// Settle drops a hive's entries that the cache has caught up with.
func (l *Ledger) Settle(hive string, cached CachedVersion) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for uid := range l.byHive[hive] {
		rv, found := cached(uid)
		if !found || rv != l.byTask[uid].resourceVersion {
			l.dropLocked(uid)
		}
	}
}

// Forget drops every entry of a hive, for example when it is deleted.
func (l *Ledger) Forget(hive string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for uid := range l.byHive[hive] {
		l.dropLocked(uid)
	}
}

// Used is the number of slots an agent uses: the tasks the cache shows bound to it, and the
// binds the ledger holds for it that the cache does not show yet.
func (l *Ledger) Used(agent string, boundInCache []types.UID) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(boundInCache)
	held := l.byAgent[agent]
	if len(held) == 0 {
		return n
	}
	seen := make(map[types.UID]struct{}, len(boundInCache))
	for _, uid := range boundInCache {
		seen[uid] = struct{}{}
	}
	for uid := range held {
		if _, ok := seen[uid]; !ok {
			n++
		}
	}
	return n
}

// Held returns the binds the ledger holds for a hive's agents, by agent. The hive
// controller counts them as busy slots with those its cache shows: read them before the
// cache, so that an entry dropped in between (because the cache caught up) is in the
// cache's view.
func (l *Ledger) Held(hive string) map[string][]types.UID {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string][]types.UID{}
	for uid := range l.byHive[hive] {
		e := l.byTask[uid]
		out[e.agent] = append(out[e.agent], uid)
	}
	return out
}

// Size is the number of binds held.
func (l *Ledger) Size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.byTask)
}

func (l *Ledger) dropLocked(task types.UID) {
	e, ok := l.byTask[task]
	if !ok {
		return
	}
	delete(l.byTask, task)
	remove(l.byAgent, e.agent, task)
	remove(l.byHive, e.hive, task)
}

func add(m map[string]map[types.UID]struct{}, key string, task types.UID) {
	s := m[key]
	if s == nil {
		s = map[types.UID]struct{}{}
		m[key] = s
	}
	s[task] = struct{}{}
}

func remove(m map[string]map[types.UID]struct{}, key string, task types.UID) {
	if s := m[key]; s != nil {
		delete(s, task)
		if len(s) == 0 {
			delete(m, key)
		}
	}
}
