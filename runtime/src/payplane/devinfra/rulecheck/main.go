// rulecheck validates what the payplane chart ships for Prometheus, with Prometheus's own code:
//
//	rulecheck rules FILE...   rule files as Prometheus loads them (YAML shape, PromQL, annotation templates)
//	rulecheck exprs           PromQL expressions, one per line on standard input (the dashboards' queries)
//
// It prints every problem and exits 1 if there was any. Built by payplane.devinfra.rulecheck_build.
package main

import (
	"bufio"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

func checkRules(p parser.Parser, files []string) int {
	problems := 0
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	for _, file := range files {
		groups, errs := rulefmt.ParseFile(file, false, model.UTF8Validation, p, logger)
		for _, err := range errs {
			fmt.Println(err)
			problems++
		}
		if groups != nil {
			rules := 0
			for _, group := range groups.Groups {
				rules += len(group.Rules)
			}
			fmt.Printf("%s: %d groups, %d rules\n", file, len(groups.Groups), rules)
		}
	}
	return problems
}

func checkExprs(p parser.Parser) int {
	problems, checked := 0, 0
	scanner := bufio.NewScanner(os.Stdin)
	for scanner.Scan() {
		expr := strings.TrimSpace(scanner.Text())
		if expr == "" {
			continue
		}
		checked++
		if _, err := p.ParseExpr(expr); err != nil {
			fmt.Printf("%q: %v\n", expr, err)
			problems++
		}
	}
	fmt.Printf("%d expressions\n", checked)
	return problems
}

func main() {
	if len(os.Args) < 2 || (os.Args[1] != "rules" && os.Args[1] != "exprs") {
		fmt.Fprintln(os.Stderr, "usage: rulecheck rules FILE... | rulecheck exprs < expressions")
		os.Exit(2)
	}
	p := parser.NewParser(parser.Options{})
	problems := 0
	if os.Args[1] == "rules" {
		problems = checkRules(p, os.Args[2:])
	} else {
		problems = checkExprs(p)
	}
	if problems > 0 {
		os.Exit(1)
	}
}
