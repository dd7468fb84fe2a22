// Package controllers holds the reconcilers of the Hive operator: the HiveReconciler (agent
// pods, their access objects, the PodDisruptionBudget, the status), the Dispatcher (binding
// queued tasks to free slots) and the TaskReconciler (the rest of a task's life that is the
// operator's). They are thin: each observes the cache, decides through the pure packages
// under internal/, and writes. docs/architecture.md maps the parts, their contracts, and
// three paths through them file by file.
package controllers
