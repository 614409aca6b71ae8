//! Images (`/v1/images...`): list, inspect, import, build, delete.

use futures::Stream;
use nexus_api::{BuildImageRequest, ImageBuildEvent, ImageInfo, ImageList, ImportImageRequest};

use crate::{Client, ClientError, segment};

impl Client {
    /// `GET /v1/images`.
    pub async fn list_images(&self) -> Result<ImageList, ClientError> {
        self.get_json("/v1/images").await
    }

    /// `GET /v1/images/{image}`.
    pub async fn image(&self, image: &str) -> Result<ImageInfo, ClientError> {
        self.get_json(&format!("/v1/images/{}", segment(image)))
            .await
    }

    /// `POST /v1/images`: imports a directory of the daemon's host.
    pub async fn import_image(
        &self,
        request: &ImportImageRequest,
    ) -> Result<ImageInfo, ClientError> {
        self.call(self.http.post(self.url("/v1/images")).json(request))
            .await
    }

    /// `POST /v1/images/build`: the build's progress, ending with `done` or `failed`.
    /// A request the daemon refuses up front is an `Err` here, before any event.
    pub async fn build_image(
        &self,
        request: &BuildImageRequest,
    ) -> Result<impl Stream<Item = Result<ImageBuildEvent, ClientError>> + Unpin + use<>, ClientError>
    {
        self.ndjson(self.http.post(self.url("/v1/images/build")).json(request))
            .await
    }

    /// `DELETE /v1/images/{image}`.
    pub async fn delete_image(&self, image: &str) -> Result<(), ClientError> {
        self.call_empty(
            self.http
                .delete(self.url(&format!("/v1/images/{}", segment(image)))),
        )
        .await
    }
}
