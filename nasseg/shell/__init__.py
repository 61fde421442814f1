"""The application shell: the ``nasseg`` command line, the Ray runner, the HTML report and the
benchmarks. It uses the library core (``nasseg.space`` ... ``nasseg.train``) and is never imported
by it; process-wide settings (heap, plotting backend, thread counts) are made here, at entry points.
"""
