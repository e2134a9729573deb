"""The local stack: DynamoDB Local and moto in server mode, wired as template.yaml wires the
cloud, with a node simulator standing in for SSM's agents. No AWS account is needed."""
