// The test bed's cluster DNS: CoreDNS (coremain, as the coredns command) with the plugins the bed's Corefile
// (hack/testbed.sh) uses, and log, cache and health for trying things out by hand, instead of the ~60 of
// upstream's core/plugin bundle (cloud SDKs included). Built by hack/build-coredns.sh.
package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	// The plugins: importing one registers it (its init); nothing else selects them. (kubernetes and template
	// bring metadata, prometheus and transfer along.)
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/template"
)

// A plugin runs at its directive's place in the execution order, not where the Corefile names it. The
// order is upstream's own (dnsserver.Directives as generated from its plugin.cfg, still intact here),
// kept for exactly the plugins registered above, so nothing is ordered by hand.
func main() {
	registered := map[string]bool{}
	for _, name := range caddy.ListPlugins()["others"] {
		if d, ok := strings.CutPrefix(name, "dns."); ok {
			registered[d] = true
		}
	}
	var directives []string
	for _, d := range dnsserver.Directives {
		if registered[d] {
			directives = append(directives, d)
			delete(registered, d)
		}
	}
	if len(registered) > 0 {
		fmt.Fprintf(os.Stderr, "coredns: plugins without a place in upstream's directive order: %v\n", registered)
		os.Exit(2)
	}
	if err := dnsserver.SetDirectives(directives); err != nil {
		fmt.Fprintln(os.Stderr, "coredns:", err)
		os.Exit(2)
	}
	coremain.Run()
}
