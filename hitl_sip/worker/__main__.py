"""``python -m hitl_sip.worker``: one media-worker process (started by ``hitl-sip serve``)."""

from hitl_sip.worker.main import main

raise SystemExit(main())
