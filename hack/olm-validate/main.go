// olm-validate loads an OLM bundle directory (manifests/ + metadata/) with OLM's own loader
// (github.com/operator-framework/api/pkg/manifests) and runs OLM's validators on it: the default bundle
// validators (CSV, CRD, bundle) that `operator-sdk bundle validate` runs, plus the OperatorHub, good-practices,
// deprecated-API, standard-capabilities and standard-categories validators. Prints every result and exits 1
// when any validator reports an error (warnings are printed, not fatal), 2 when the bundle does not load.
//
//	olm-validate [-k8s-version 1.36] BUNDLE_DIR
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/operator-framework/api/pkg/manifests"
	"github.com/operator-framework/api/pkg/validation"
	"github.com/operator-framework/api/pkg/validation/errors"
	interfaces "github.com/operator-framework/api/pkg/validation/interfaces"
)

func main() {
	k8sVersion := flag.String("k8s-version", "", "Kubernetes version for the OperatorHub and deprecated-API validators")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: olm-validate [-k8s-version X.Y] BUNDLE_DIR")
		os.Exit(2)
	}
	dir := flag.Arg(0)
	bundle, err := manifests.GetBundleFromDir(dir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ERROR loading bundle %s: %v\n", dir, err)
		os.Exit(2)
	}
	fmt.Printf("loaded bundle %s: CSV %s, channels %v (default %q), %d v1 CRD(s), %d object(s) in all\n",
		dir, bundle.CSV.GetName(), bundle.Channels, bundle.DefaultChannel, len(bundle.V1CRDs), len(bundle.Objects))

	suites := []struct {
		name string
		v    interfaces.Validator
	}{
		{"default (CSV, CRD, bundle)", validation.DefaultBundleValidators},
		{"operatorhub v2", validation.OperatorHubV2Validator},
		{"standard capabilities", validation.StandardCapabilitiesValidator},
		{"standard categories", validation.StandardCategoriesValidator},
		{"good practices", validation.GoodPracticesValidator},
		{"deprecated APIs", validation.AlphaDeprecatedAPIsValidator},
	}
	objs := bundle.ObjectsToValidate()
	if *k8sVersion != "" {
		objs = append(objs, map[string]string{"k8s-version": *k8sVersion})
	}
	nErr, nWarn := 0, 0
	for _, s := range suites {
		results := s.v.Validate(objs...)
		fmt.Printf("== %s\n", s.name)
		clean := true
		for _, r := range results {
			for _, e := range r.Errors {
				report("ERROR", r, e)
				nErr++
				clean = false
			}
			for _, w := range r.Warnings {
				report("WARN", r, w)
				nWarn++
				clean = false
			}
		}
		if clean {
			fmt.Println("   ok")
		}
	}
	fmt.Printf("olm-validate: %d error(s), %d warning(s)\n", nErr, nWarn)
	if nErr > 0 {
		os.Exit(1)
	}
}

func report(level string, r errors.ManifestResult, e errors.Error) {
	fmt.Printf("   %s [%s] %s\n", level, r.Name, e.Error())
}
