-- People act from their inbox (issue #15, mentorflow/pages/, docs/people.md): a command sent
-- through a signed action link is audited in api_audit like an API call, with the credential
-- kind 'link': credential_id is the link's person, credential_name its purpose
-- (meeting_outcome, feedback, sign_agreement, …). Nothing else about the table changes.

ALTER TABLE api_audit DROP CONSTRAINT api_audit_credential_kind_check;
ALTER TABLE api_audit ADD CONSTRAINT api_audit_credential_kind_check
    CHECK (credential_kind IN ('api_key', 'token', 'link'));
