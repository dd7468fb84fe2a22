package v1alpha1

// Labels, annotations and environment variables that make up the contract between the
// operator, agent pods and agents. They are stable: agents in any language rely on them.
const (
	// LabelHive is set on every agent pod to the name of its hive.
	LabelHive = "swarm.aihub.dev/hive"
	// LabelRevision is set on every agent pod to the revision (template hash) it was built
	// from.
	LabelRevision = "swarm.aihub.dev/revision"
	// AnnotationDrainingSince marks an agent pod as draining, with the RFC 3339 time (with
	// fractional seconds) the drain started. A draining agent gets no new tasks and is deleted once idle or when
	// spec.rollout.drainTimeout has passed.
	AnnotationDrainingSince = "swarm.aihub.dev/draining-since"

	// EnvPodName is the agent pod's name: the value of status.agent on its tasks.
	EnvPodName = "POD_NAME"
	// EnvPodNamespace is the agent pod's namespace, which is also its tasks' namespace.
	EnvPodNamespace = "POD_NAMESPACE"
	// EnvHiveName is the name of the agent's hive.
	EnvHiveName = "HIVE_NAME"
	// EnvAgentConcurrency is spec.agent.concurrency: how many tasks the agent may run at
	// once.
	EnvAgentConcurrency = "AGENT_CONCURRENCY"
	// EnvAgentCapabilities is spec.agent.capabilities joined with commas.
	EnvAgentCapabilities = "AGENT_CAPABILITIES"
	// EnvServingPort is spec.serving.port, set only when the hive serves requests: the
	// agent answers POST /v1/requests on it.
	EnvServingPort = "AGENT_SERVING_PORT"
	// EnvServingConcurrency is spec.serving.concurrency, set only when the hive serves
	// requests: how many requests the agent serves at once.
	EnvServingConcurrency = "AGENT_SERVING_CONCURRENCY"

	// TaskFieldAgent is the selectable field an agent watches its own tasks with.
	TaskFieldAgent = "status.agent"
	// TaskFieldHive is the selectable field that lists one hive's tasks.
	TaskFieldHive = "spec.hive"
	// TaskFieldPhase is the selectable field of status.phase: the operator and the agents
	// watch only the tasks that have not finished (UnfinishedTasks), so finished tasks leave
	// their memory.
	TaskFieldPhase = "status.phase"
)

// The request protocol between the hive gateway and an agent (docs/agent-protocol.md).
const (
	// RequestPath is where an agent serves requests: POST, the body is the input and the
	// response body the result.
	RequestPath = "/v1/requests"
	// HeaderRequestID names a request (the gateway's id); an agent's handler sees it as the
	// name of its task.
	HeaderRequestID = "Hive-Request-Id"
	// HeaderAttempt is the gateway's try of a request, from 1.
	HeaderAttempt = "Hive-Attempt"
	// HeaderTimeout is how long the agent may take, as a Go duration ("30s"): the
	// handler's context ends then.
	HeaderTimeout = "Hive-Timeout"
	// HeaderAgent is the pod that answered, on every response of an agent.
	HeaderAgent = "Hive-Agent"
	// HeaderOutcome is "succeeded" or "failed": a header when the handler returned before
	// writing, a trailer when it streamed.
	HeaderOutcome = "Hive-Outcome"
	// HeaderError is the handler's error, next to Hive-Outcome: failed.
	HeaderError = "Hive-Error"
)

// Outcomes of a request, the values of HeaderOutcome.
const (
	OutcomeSucceeded = "succeeded"
	OutcomeFailed    = "failed"
)
