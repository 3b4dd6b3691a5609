"""Google Cloud: pre-flight checks, the Vertex AI training job, the Flex Template metadata."""
