// Package controllers holds the reconcilers of the Hive operator. They are thin: they read
// the cluster, decide through the pure functions under internal/, and write the outcome.
package controllers
