"""The AWS CDK app that deploys product-analyzer: `cd infra && python app.py` synthesizes it into cdk.out."""
