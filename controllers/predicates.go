package controllers

import (
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
)

// updatesWhere passes creations, deletions and generic events, and the updates of objects of
// type T for which changed(old, new) holds; updates of other types are dropped.
func updatesWhere[T client.Object](changed func(old, new T) bool) predicate.Funcs {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			o, ok1 := e.ObjectOld.(T)
			n, ok2 := e.ObjectNew.(T)
			return ok1 && ok2 && changed(o, n)
		},
	}
}
