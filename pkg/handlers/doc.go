// Package handlers holds ready-made agent.Handlers that wrap work written in any language:
// Exec runs a command per task, HTTP posts each task to an endpoint, and Echo returns the
// input (for demos and benchmarks). The hive-agent binary is built on them; Go agents can
// use them too, alone or wrapped in their own handlers.
//
// Every handler stops when its context ends, and fails a task whose result would exceed
// the size status.result may hold (api/v1alpha1.MaxResultLength) with ErrResultTooLarge,
// without buffering more than that.
package handlers

import (
	"github.com/aihub-dev/hive-operator/pkg/agent"

	"errors"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
)

// ErrResultTooLarge is wrapped by the error of a handler whose output does not fit in
// status.result.
var ErrResultTooLarge = errors.New("result too large")

// resultLimit is the largest result a handler returns, in bytes. The API counts characters,
// of which a byte is at most one, so a result within it always fits.
const resultLimit = swarmv1alpha1.MaxResultLength

// messageLimit is how much of a handler's error message the agent stores.
const messageLimit = agent.MaxErrorLength
