package v1alpha1

// Hive condition types.
const (
	// HiveAvailable is true while at least spec.replicas - maxUnavailable agents are ready.
	HiveAvailable = "Available"
	// HiveProgressing is true while the hive is moving towards its spec: creating, draining
	// or replacing agents. Its reason and message say what it waits for.
	HiveProgressing = "Progressing"
	// HiveDegraded is true when the hive cannot reach its spec by itself, for example when
	// the API server rejects its pod template.
	HiveDegraded = "Degraded"
	// HiveScalingActive is true when the built-in autoscaler sizes the hive; its reason says
	// whether a bound (min or max) limits the recommendation.
	HiveScalingActive = "ScalingActive"
)

// Hive condition reasons.
const (
	// ReasonAgentsReady (Available=True): enough agents are ready.
	ReasonAgentsReady = "AgentsReady"
	// ReasonAgentsUnavailable (Available=False): fewer agents are ready than the rollout
	// allows.
	ReasonAgentsUnavailable = "AgentsUnavailable"

	// ReasonRolloutInProgress (Progressing=True): agents of an older revision are being
	// replaced.
	ReasonRolloutInProgress = "RolloutInProgress"
	// ReasonScalingUp (Progressing=True): agents are being created.
	ReasonScalingUp = "ScalingUp"
	// ReasonScalingDown (Progressing=True): surplus agents are draining or being deleted.
	ReasonScalingDown = "ScalingDown"
	// ReasonWaitingForReady (Progressing=True): agents exist but are not ready yet.
	ReasonWaitingForReady = "WaitingForReady"
	// ReasonStable (Progressing=False): every agent runs the current revision and the
	// count matches the spec.
	ReasonStable = "Stable"

	// ReasonPodCreateFailed (Degraded=True): the API server refused to create an agent pod;
	// the message carries its answer (an invalid template, an exhausted quota).
	ReasonPodCreateFailed = "PodCreateFailed"
	// ReasonAgentAccessFailed (Degraded=True): the API server refused the agents' service
	// account, role or role binding; the message carries its answer.
	ReasonAgentAccessFailed = "AgentAccessFailed"
	// ReasonDisruptionBudgetFailed (Degraded=True): the API server refused the hive's
	// PodDisruptionBudget; the message carries its answer.
	ReasonDisruptionBudgetFailed = "DisruptionBudgetFailed"
	// ReasonAgentsFailing (Degraded=True): agent pods keep failing after they start.
	ReasonAgentsFailing = "AgentsFailing"
	// ReasonAsExpected (Degraded=False): nothing is wrong.
	ReasonAsExpected = "AsExpected"

	// ReasonAutoscalingDisabled (ScalingActive=False): spec.autoscaling is unset.
	ReasonAutoscalingDisabled = "AutoscalingDisabled"
	// ReasonDesiredWithinRange (ScalingActive=True): the recommendation lies within
	// [minReplicas, maxReplicas].
	ReasonDesiredWithinRange = "DesiredWithinRange"
	// ReasonTooFewReplicas (ScalingActive=True): the load asks for fewer agents than
	// minReplicas.
	ReasonTooFewReplicas = "TooFewReplicas"
	// ReasonTooManyReplicas (ScalingActive=True): the load asks for more agents than
	// maxReplicas.
	ReasonTooManyReplicas = "TooManyReplicas"
	// ReasonScaledToZero (ScalingActive=True): the hive was idle for idleTimeout and runs no
	// agents until a task is queued.
	ReasonScaledToZero = "ScaledToZero"
)

// Task condition types.
const (
	// TaskScheduled is false while a queued task cannot be dispatched for a reason the user
	// can act on (HiveNotFound, Unschedulable), and true once it is bound.
	TaskScheduled = "Scheduled"
	// TaskAttemptFailed records why the last failed attempt failed (TimedOut, AgentLost,
	// AgentFailed); it stays while later attempts run.
	TaskAttemptFailed = "AttemptFailed"
	// TaskDependenciesReady reports, for a task with spec.dependsOn, whether the tasks it
	// depends on have all succeeded. Once True it stays True: the task no longer waits on
	// them, even if they are deleted afterwards (by their TTL, say).
	TaskDependenciesReady = "DependenciesReady"
)

// Task condition reasons.
const (
	// ReasonHiveNotFound (Scheduled=False): spec.hive names no hive in the namespace.
	ReasonHiveNotFound = "HiveNotFound"
	// ReasonUnschedulable (Scheduled=False): the hive's agents lack a required capability.
	ReasonUnschedulable = "Unschedulable"
	// ReasonQueued (Scheduled=False): the task waits in its hive's queue for a free slot. It
	// replaces HiveNotFound or Unschedulable once those no longer hold.
	ReasonQueued = "Queued"
	// ReasonBound (Scheduled=True): the task was bound to an agent.
	ReasonBound = "Bound"

	// ReasonTimedOut: the attempt ran longer than spec.timeout.
	ReasonTimedOut = "TimedOut"
	// ReasonAgentLost: the agent pod went away, failed or stayed not ready during the
	// attempt.
	ReasonAgentLost = "AgentLost"
	// ReasonAgentFailed: the agent reported the attempt failed.
	ReasonAgentFailed = "AgentFailed"
	// ReasonDependencyFailed: a task named in spec.dependsOn failed or was cancelled.
	ReasonDependencyFailed = "DependencyFailed"
	// ReasonDependencyCycle: the task depends on itself through spec.dependsOn (A needs B,
	// B needs A); it fails for good, with the cycle in its message.
	ReasonDependencyCycle = "DependencyCycle"
	// ReasonDependencyNotFound (DependenciesReady=False): a task named in spec.dependsOn does
	// not exist. The task fails if it still does not exist after a wait.
	ReasonDependencyNotFound = "DependencyNotFound"
	// ReasonWaitingForDependencies (DependenciesReady=False): some dependency has not
	// finished yet.
	ReasonWaitingForDependencies = "WaitingForDependencies"
	// ReasonDependenciesSucceeded (DependenciesReady=True): every dependency succeeded.
	ReasonDependenciesSucceeded = "DependenciesSucceeded"
	// ReasonPermanentFailure: the agent reported a failure that a retry cannot fix (the
	// handler said so); the task fails without retrying.
	ReasonPermanentFailure = "PermanentFailure"
	// ReasonResultTooLarge: the handler returned a result larger than status.result holds;
	// the same input would give the same result, so the task fails without retrying.
	ReasonResultTooLarge = "ResultTooLarge"
	// ReasonRetriesExhausted: the last attempt failed and no retries were left.
	ReasonRetriesExhausted = "RetriesExhausted"
)
