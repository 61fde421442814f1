# The two commands of the README. Both set up a fresh machine first (tools/setup.sh).
.PHONY: setup demo test test-slow

setup:
	@bash tools/setup.sh

# The main job on the bundled data: a short DARTS search with Hessian eigenvalue tracking on an
# embedded local Ray, decode, drawings, a short retrain, evaluation and the HTML report.
demo: setup
	.venv/bin/nasseg demo

# The default test suite (CI runs this through .ci/run). Exit status 5 = no tests collected.
test: setup
	.venv/bin/lint-imports --no-cache
	.venv/bin/python -m pytest -q -ra -n 2 --dist loadfile; status=$$?; if [ $$status -eq 5 ]; then exit 0; else exit $$status; fi

# Long checks (full shared CamVid, real searches): run by hand.
test-slow: setup
	.venv/bin/python -m pytest -q -ra -m slow
