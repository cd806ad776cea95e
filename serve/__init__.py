"""The Ray Serve application (``serve run serve.app:build checkpoint=PATH``)."""
