package main

import (
	"strconv"

	"github.com/esm2go/esm2go/esm"
	"github.com/esm2go/esm2go/monitor"
)

// pageSettings are the run's settings the --metrics-addr page shows.
func pageSettings(f *embedFlags, modelPath string, layers []int, inc esm.Repr, dev deviceSpec, ords []int, prec esm.Precision, inputs []string) []monitor.Setting {
	device := "cpu"
	if len(ords) > 0 {
		device = "cuda:" + joinInts(ords)
	}
	if dev.raw != "" && dev.raw != device {
		device += " (--device " + dev.raw + ")"
	}
	in := capList(inputs, 5)
	if len(inputs) > 1 {
		in = strconv.Itoa(len(inputs)) + " files: " + in
	}
	return []monitor.Setting{
		{Name: "model", Value: f.model},
		{Name: "model path", Value: modelPath},
		{Name: "device", Value: device},
		{Name: "precision", Value: string(prec)},
		{Name: "layers", Value: joinInts(layers)},
		{Name: "include", Value: inc.String()},
		{Name: "input", Value: in},
		{Name: "output", Value: f.out},
		{Name: "esm2go", Value: Version()},
	}
}
