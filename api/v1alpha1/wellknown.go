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

	// TaskFieldAgent is the selectable field an agent watches its own tasks with.
	TaskFieldAgent = "status.agent"
	// TaskFieldHive is the selectable field that lists one hive's tasks.
	TaskFieldHive = "spec.hive"
	// TaskFieldPhase is the selectable field of status.phase: the operator and the agents
	// watch only the tasks that have not finished (UnfinishedTasks), so finished tasks leave
	// their memory.
	TaskFieldPhase = "status.phase"
)
