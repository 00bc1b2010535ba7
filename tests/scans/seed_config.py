"""moto seeding for the AWS Config check: a recording recorder in us-east-1, none in eu-west-1."""

ACCOUNT = "123456789012"


def seed(session, expect):
    config = session.client("config", region_name="us-east-1")
    config.put_configuration_recorder(
        ConfigurationRecorder={
            "name": "default",
            "roleARN": f"arn:aws:iam::{ACCOUNT}:role/config-recorder",
            "recordingGroup": {"allSupported": True, "includeGlobalResourceTypes": True},
        }
    )
    config.put_delivery_channel(DeliveryChannel={"name": "default", "s3BucketName": "config-delivery"})
    config.start_configuration_recorder(ConfigurationRecorderName="default")
    for region, status in (("us-east-1", "pass"), ("eu-west-1", "fail")):
        expect(
            "config-recorder-enabled",
            f"arn:aws:config:{region}:{ACCOUNT}:configuration-recorder/*",
            status,
        )
