/**
 * Errors of the loopback Step Functions endpoint, as AWS answers them over the JSON 1.0 protocol
 * (`{"__type":"ExecutionAlreadyExists","message":"..."}` with an HTTP status), so
 * `@aws-sdk/client-sfn` raises its typed exceptions (`ExecutionAlreadyExists`, `InvalidToken`...)
 * and its retry strategy recognises throttling.
 */
export class SfnApiError extends Error {
  override readonly name = 'SfnApiError';
  constructor(
    /** The AWS error type, e.g. `ExecutionDoesNotExist`. */
    readonly type: string,
    message: string,
    readonly status = 400,
  ) {
    super(message);
  }
}

/** Constructors for the errors the endpoint answers, one per AWS error type. */
export const sfnErrors = {
  validation: (message: string) => new SfnApiError('ValidationException', message),
  invalidArn: (arn: string, what: string) => new SfnApiError('InvalidArn', `Invalid Arn: '${arn}' is not a valid ${what} ARN`),
  invalidName: (name: string) =>
    new SfnApiError(
      'InvalidName',
      `Invalid Name: '${name}' (use 1-80 characters without whitespace, brackets < > { } [ ], wildcards ? *, any of " # % \\ ^ | ~ \` $ & , ; : / or control characters)`,
    ),
  invalidDefinition: (message: string) => new SfnApiError('InvalidDefinition', `Invalid State Machine Definition: '${message}'`),
  stateMachineDoesNotExist: (arn: string) => new SfnApiError('StateMachineDoesNotExist', `State Machine Does Not Exist: '${arn}'`),
  stateMachineAlreadyExists: (arn: string) =>
    new SfnApiError('StateMachineAlreadyExists', `State Machine Already Exists: '${arn}' with a different definition or role`),
  executionDoesNotExist: (arn: string) => new SfnApiError('ExecutionDoesNotExist', `Execution Does Not Exist: '${arn}'`),
  executionAlreadyExists: (arn: string) => new SfnApiError('ExecutionAlreadyExists', `Execution Already Exists: '${arn}'`),
  invalidExecutionInput: (message: string) => new SfnApiError('InvalidExecutionInput', `Invalid Execution Input: ${message}`),
  invalidOutput: (message: string) => new SfnApiError('InvalidOutput', `Invalid Output: ${message}`),
  activityDoesNotExist: (arn: string) => new SfnApiError('ActivityDoesNotExist', `Activity Does Not Exist: '${arn}'`),
  invalidToken: (message: string) => new SfnApiError('InvalidToken', `Invalid Token: ${message}`),
  taskTimedOut: () => new SfnApiError('TaskTimedOut', 'Task Timed Out: the task of this token timed out, was already answered, or its execution is closed'),
  throttled: () => new SfnApiError('ThrottlingException', 'Rate exceeded'),
  accessDenied: (accessKeyId: string, action: string) =>
    new SfnApiError(
      'AccessDeniedException',
      `The caller with access key ${accessKeyId} is not authorized to perform: states:${action} because no identity-based policy allows the states:${action} action`,
    ),
  unknownOperation: (target: string) =>
    new SfnApiError('UnknownOperationException', `Unknown operation '${target}'; send X-Amz-Target: AWSStepFunctions.<Action>`),
  serialization: (message: string) => new SfnApiError('SerializationException', message),
  stateMachineTypeNotSupported: (type: string) =>
    new SfnApiError('StateMachineTypeNotSupported', `State machine type '${type}' is not supported by sfn-local; it runs STANDARD state machines`),
};
