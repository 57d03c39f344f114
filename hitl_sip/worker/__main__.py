"""``python -m hitl_sip.worker``: one media-worker process (started by ``hitl-sip serve``)."""

from hitl_sip.worker.main import main

if __name__ == "__main__":  # not when multiprocessing's spawn imports it in the speech process
    raise SystemExit(main())
