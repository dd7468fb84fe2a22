// Command hello is the smallest binary an image test builds for several platforms.
package main

import "fmt"

func main() { fmt.Println("hello") }
