// Package v1alpha1 contains the Hive and Task API of the swarm.aihub.dev group.
//
// A Hive is a warm pool of agent pods built from a pod template; a Task is one unit of
// work that the operator queues and binds to an agent of its hive with a free slot.
//
// +kubebuilder:object:generate=true
// +groupName=swarm.aihub.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of this API.
	GroupVersion = schema.GroupVersion{Group: "swarm.aihub.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the Hive and Task types with a scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the types of this group and version to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(scheme *runtime.Scheme) error {
	scheme.AddKnownTypes(GroupVersion, &Hive{}, &HiveList{}, &Task{}, &TaskList{})
	metav1.AddToGroupVersion(scheme, GroupVersion)
	return nil
}
